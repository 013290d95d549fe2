import { Readable } from 'node:stream'
import { Client, Metadata, credentials, status } from '@grpc/grpc-js'
import type { ChannelInterface, ClientReadableStream, ServiceError } from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import { NotFoundError, StoreUnavailableError } from '../store/errors.ts'
import type { Descriptor } from '../store/types.ts'
import { containerdProto } from './proto.ts'
import type { ContainerdMethods, PayloadDecoders, WireContentInfo, WireEnvelope, WireImage, WirePlugin, WireTimestamp } from './proto.ts'

export interface ContainerdClientOptions {
  /** Path of containerd's gRPC socket (`/run/containerd/containerd.sock`) or a `unix:` address. */
  socket: string
  /** Sent as `containerd-namespace` metadata on every call, e.g. `k8s.io`. */
  namespace: string
  /** Deadline of unary calls in ms (default 10 000). */
  callTimeoutMs?: number
  /** Longest wait between reconnection attempts in ms (default 2 000). */
  maxReconnectBackoffMs?: number
}

export interface CallOptions {
  signal?: AbortSignal
}

export interface ImageInfo {
  name: string
  labels: Record<string, string>
  /** What the name points at; containerd always sets it. */
  target: Descriptor
  createdAt?: Date
  updatedAt?: Date
}

export interface ContentInfo {
  digest: string
  size: number
  labels: Record<string, string>
  createdAt?: Date
  updatedAt?: Date
}

export interface PluginInfo {
  type: string
  id: string
  requires: string[]
  exports: Record<string, string>
  capabilities: string[]
  /** Set when the plugin failed to initialise and cannot be used. */
  initError?: string
}

/** The decoded body of an event; `unknown` for types this client does not decode. */
export type EventPayload =
  | { type: 'image-create', name: string, labels: Record<string, string> }
  | { type: 'image-update', name: string, labels: Record<string, string> }
  | { type: 'image-delete', name: string }
  | { type: 'content-create', digest: string, size: number }
  | { type: 'content-delete', digest: string }
  | { type: 'unknown' }

export interface ContainerdEvent {
  timestamp?: Date
  namespace: string
  /** E.g. `/images/create`. */
  topic: string
  /** Fully qualified message name of the payload, e.g. `containerd.services.images.v1.ImageCreate`. */
  payloadType: string
  payload: EventPayload
}

export interface ReadContentOptions extends CallOptions {
  /** First byte to read (default 0). */
  offset?: number
  /** Number of bytes to read; 0 or absent reads to the end. */
  size?: number
}

/** What ContainerdStore needs from a client; tests may pass a fake. */
export type ContainerdApi = Pick<ContainerdClient, 'getImage' | 'listImages' | 'contentInfo' | 'listContent' | 'readContent' | 'pluginInfo' | 'subscribe' | 'close'>

/**
 * A client for the parts of containerd's gRPC API the mirror uses. The connection is made lazily on the first call and
 * re-made with backoff after containerd restarts: while containerd is down calls fail fast with StoreUnavailableError
 * and later calls succeed again on the same client. Content that is absent raises NotFoundError.
 */
export class ContainerdClient {
  readonly namespace: string
  private readonly grpc: Client
  private readonly methods: ContainerdMethods
  private readonly payloads: PayloadDecoders
  private readonly callTimeoutMs: number
  private closed = false

  constructor (options: ContainerdClientOptions) {
    const proto = containerdProto()
    this.methods = proto.methods
    this.payloads = proto.payloads
    this.namespace = options.namespace
    this.callTimeoutMs = options.callTimeoutMs ?? 10_000
    const address = options.socket.startsWith('unix:')
      ? options.socket
      : options.socket.startsWith('/') ? `unix://${options.socket}` : `unix:${options.socket}`
    this.grpc = new Client(address, credentials.createInsecure(), {
      // grpc-js backs off up to 120 s by default; a restarted containerd should be usable again within seconds.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': options.maxReconnectBackoffMs ?? 2_000,
      // Image lists of large nodes exceed the 4 MiB default.
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
    })
  }

  /**
   * The channel to containerd's socket, for clients of its other services (the doctor's CRI client) to share instead
   * of opening a second connection. close() closes it.
   */
  get channel (): ChannelInterface {
    return this.grpc.getChannel()
  }

  /** Images.Get: the image record with this exact name. */
  async getImage (name: string, options?: CallOptions): Promise<ImageInfo> {
    const res = await this.unary(this.methods.imagesGet, { name }, options, `image ${name}`)
    if (res.image === null) throw new NotFoundError(`image ${name} not found`)
    return toImage(res.image)
  }

  /** Images.List: images matching any of the filters (containerd filter syntax), all when none are given. */
  async listImages (filters: string[] = [], options?: CallOptions): Promise<ImageInfo[]> {
    const res = await this.unary(this.methods.imagesList, { filters }, options, 'image list')
    return res.images.map(toImage)
  }

  /** Content.Info: size and labels of committed content. */
  async contentInfo (digest: string, options?: CallOptions): Promise<ContentInfo> {
    const res = await this.unary(this.methods.contentInfo, { digest }, options, `content ${digest}`)
    if (res.info === null) throw new NotFoundError(`content ${digest} not found`)
    return toContentInfo(res.info)
  }

  /** Content.List: every committed blob matching the filters. */
  async * listContent (filters: string[] = [], options?: CallOptions): AsyncGenerator<ContentInfo> {
    const call = this.serverStream(this.methods.contentList, { filters }, 'content list')
    for await (const res of this.messages(call, options?.signal, 'content list')) {
      for (const info of res.info) yield toContentInfo(info)
    }
  }

  /**
   * Content.Read as a byte stream. Errors (NotFoundError, StoreUnavailableError) arrive on the stream; destroying it
   * cancels the call.
   */
  readContent (digest: string, options: ReadContentOptions = {}): Readable {
    const what = `content ${digest}`
    let call: ClientReadableStream<{ offset: number, data: Buffer }> | undefined
    let error: unknown
    try {
      options.signal?.throwIfAborted()
      call = this.serverStream(this.methods.contentRead, { digest, offset: options.offset ?? 0, size: options.size ?? 0 }, what)
    } catch (err) {
      error = err
    }
    const messages = call === undefined ? undefined : this.messages(call, options.signal, what)
    async function * chunks (): AsyncGenerator<Buffer> {
      if (messages === undefined) throw error
      for await (const res of messages) {
        if (res.data.byteLength > 0) yield res.data
      }
    }
    const readable = Readable.from(chunks(), { objectMode: false, highWaterMark: 1024 * 1024 })
    // A stream destroyed before its first read never runs the generator's cleanup.
    readable.once('close', () => { call?.cancel() })
    return readable
  }

  /**
   * Events.Subscribe. The subscription starts when this is called, so events that happen before the first
   * iteration are kept. The iteration never ends on its own: when the stream breaks (e.g. containerd restarts) it
   * throws StoreUnavailableError and the caller should subscribe again (and re-list what it may have missed). Aborting
   * the signal ends it with the signal's reason. Filters use containerd's syntax, e.g. `topic~="/images/"`.
   */
  subscribe (filters: string[] = [], options?: CallOptions): AsyncIterable<ContainerdEvent> {
    options?.signal?.throwIfAborted()
    const call = this.serverStream(this.methods.eventsSubscribe, { filters }, 'event subscription')
    return this.events(call, options?.signal)
  }

  /** Introspection.Plugins: plugins matching any of the filters, e.g. `type=="io.containerd.content.v1"`. */
  async plugins (filters: string[] = [], options?: CallOptions): Promise<PluginInfo[]> {
    const res = await this.unary(this.methods.introspectionPlugins, { filters }, options, 'plugin list')
    return res.plugins.map(toPlugin)
  }

  /**
   * One plugin by type and id, or undefined. Uses Introspection.PluginInfo (containerd 2.x) and falls back to a
   * filtered Plugins call where it is not implemented (1.6).
   */
  async pluginInfo (type: string, id: string, options?: CallOptions): Promise<PluginInfo | undefined> {
    try {
      const res = await this.unary(this.methods.introspectionPluginInfo, { type, id }, options, `plugin ${type}.${id}`)
      if (res.plugin !== null) return toPlugin(res.plugin)
    } catch (err) {
      if (err instanceof NotFoundError) return undefined
      if (grpcCode(err) !== status.UNIMPLEMENTED) throw err
    }
    const plugins = await this.plugins([`type==${JSON.stringify(type)},id==${JSON.stringify(id)}`], options)
    return plugins.find((p) => p.type === type && p.id === id)
  }

  /** Closes the channel; calls made afterwards fail with StoreUnavailableError. */
  close (): void {
    if (this.closed) return
    this.closed = true
    this.grpc.close()
  }

  private metadata (): Metadata {
    const md = new Metadata()
    md.set('containerd-namespace', this.namespace)
    return md
  }

  private async unary<Req, Res> (def: MethodDefinition<Req, Res>, request: Req, options: CallOptions | undefined, what: string): Promise<Res> {
    const signal = options?.signal
    signal?.throwIfAborted()
    if (this.closed) throw new StoreUnavailableError('containerd client is closed')
    return await new Promise<Res>((resolve, reject) => {
      const onAbort = (): void => { call.cancel() }
      const call = this.grpc.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, request,
        this.metadata(), { deadline: Date.now() + this.callTimeoutMs }, (err, res) => {
          signal?.removeEventListener('abort', onAbort)
          if (err !== null || res === undefined) reject(mapError(err, signal, what))
          else resolve(res)
        })
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  private serverStream<Req, Res> (def: MethodDefinition<Req, Res>, request: Req, what: string): ClientReadableStream<Res> {
    if (this.closed) throw new StoreUnavailableError('containerd client is closed')
    try {
      const call = this.grpc.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, request, this.metadata())
      // Errors reach the iterating consumer; this keeps one that arrives while nobody iterates (e.g. the
      // cancellation of a stream destroyed unread) from crashing the process as an unhandled 'error' event.
      call.on('error', () => {})
      return call
    } catch (err) {
      throw mapError(err, undefined, what)
    }
  }

  /** Iterates a server stream, cancelling the call on abort or early exit and mapping its errors. */
  private async * messages<Res> (call: ClientReadableStream<Res>, signal: AbortSignal | undefined, what: string): AsyncGenerator<Res> {
    const onAbort = (): void => { call.cancel() }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      if (signal?.aborted === true) call.cancel()
      for await (const message of call) yield message as Res
    } catch (err) {
      throw mapError(err, signal, what)
    } finally {
      signal?.removeEventListener('abort', onAbort)
      call.cancel()
    }
    signal?.throwIfAborted()
  }

  private async * events (call: ClientReadableStream<WireEnvelope>, signal: AbortSignal | undefined): AsyncGenerator<ContainerdEvent> {
    for await (const envelope of this.messages(call, signal, 'event subscription')) {
      yield this.toEvent(envelope)
    }
    throw new StoreUnavailableError('containerd closed the event stream')
  }

  private toEvent (envelope: WireEnvelope): ContainerdEvent {
    const typeUrl = envelope.event?.type_url ?? ''
    // containerd's type URLs are bare message names; tolerate a `type.googleapis.com/` style prefix.
    const payloadType = typeUrl.slice(typeUrl.lastIndexOf('/') + 1)
    const event: ContainerdEvent = {
      namespace: envelope.namespace,
      topic: envelope.topic,
      payloadType,
      payload: decodePayload(this.payloads, payloadType, envelope.event?.value),
    }
    const timestamp = toDate(envelope.timestamp)
    if (timestamp !== undefined) event.timestamp = timestamp
    return event
  }
}

/** The gRPC status code behind an error raised by this client, if any. */
export function grpcCode (err: unknown): number | undefined {
  for (let e = err; e instanceof Error; e = e.cause) {
    const code = (e as Partial<ServiceError>).code
    if (typeof code === 'number') return code
  }
  return undefined
}

function mapError (err: unknown, signal: AbortSignal | undefined, what: string): unknown {
  if (signal?.aborted === true) return signal.reason
  if (err instanceof NotFoundError || err instanceof StoreUnavailableError) return err
  const code = (err as Partial<ServiceError> | null)?.code
  const details = (err as Partial<ServiceError> | null)?.details ?? (err instanceof Error ? err.message : String(err))
  if (code === status.NOT_FOUND) return new NotFoundError(`${what} not found`)
  return new StoreUnavailableError(`containerd ${what}: ${details}`, { cause: err })
}

function decodePayload (decoders: PayloadDecoders, type: string, bytes: Buffer | undefined): EventPayload {
  const decode = decoders.get(type)
  if (decode === undefined || bytes === undefined) return { type: 'unknown' }
  let m: Record<string, unknown>
  try {
    m = decode(bytes)
  } catch {
    return { type: 'unknown' }
  }
  const str = (v: unknown): string => typeof v === 'string' ? v : ''
  const labels = (v: unknown): Record<string, string> => (v !== null && typeof v === 'object' ? { ...v as Record<string, string> } : {})
  switch (type) {
    case 'containerd.services.images.v1.ImageCreate': return { type: 'image-create', name: str(m.name), labels: labels(m.labels) }
    case 'containerd.services.images.v1.ImageUpdate': return { type: 'image-update', name: str(m.name), labels: labels(m.labels) }
    case 'containerd.services.images.v1.ImageDelete': return { type: 'image-delete', name: str(m.name) }
    case 'containerd.events.ContentCreate': return { type: 'content-create', digest: str(m.digest), size: typeof m.size === 'number' ? m.size : 0 }
    case 'containerd.events.ContentDelete': return { type: 'content-delete', digest: str(m.digest) }
    default: return { type: 'unknown' }
  }
}

function toDate (t: WireTimestamp | null | undefined): Date | undefined {
  if (t === null || t === undefined) return undefined
  return new Date(t.seconds * 1000 + Math.floor(t.nanos / 1e6))
}

function toImage (image: WireImage): ImageInfo {
  const info: ImageInfo = {
    name: image.name,
    labels: { ...image.labels },
    target: {
      mediaType: image.target?.media_type ?? '',
      digest: image.target?.digest ?? '',
      size: image.target?.size ?? 0,
    },
  }
  const createdAt = toDate(image.created_at)
  const updatedAt = toDate(image.updated_at)
  if (createdAt !== undefined) info.createdAt = createdAt
  if (updatedAt !== undefined) info.updatedAt = updatedAt
  return info
}

function toContentInfo (wire: WireContentInfo): ContentInfo {
  const info: ContentInfo = { digest: wire.digest, size: wire.size, labels: { ...wire.labels } }
  const createdAt = toDate(wire.created_at)
  const updatedAt = toDate(wire.updated_at)
  if (createdAt !== undefined) info.createdAt = createdAt
  if (updatedAt !== undefined) info.updatedAt = updatedAt
  return info
}

function toPlugin (wire: WirePlugin): PluginInfo {
  const plugin: PluginInfo = {
    type: wire.type,
    id: wire.id,
    requires: [...wire.requires],
    exports: { ...wire.exports },
    capabilities: [...wire.capabilities],
  }
  if (wire.init_err !== null && wire.init_err.code !== 0) plugin.initError = wire.init_err.message
  return plugin
}
