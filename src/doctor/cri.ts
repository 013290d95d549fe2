// A tiny client for the two CRI calls the doctor needs (runtime.v1 RuntimeService Version and Status). containerd
// serves CRI on its main socket; Status with verbose=true carries the CRI plugin's configuration as JSON, the only
// place a running containerd reports `config_path` and `discard_unpacked_layers`.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Client, Metadata, credentials, status as grpcStatus } from '@grpc/grpc-js'
import type { ChannelInterface, ServiceError } from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import type { MethodDefinition } from '@grpc/proto-loader'

export interface CriVersion {
  runtimeName: string
  runtimeVersion: string
  runtimeApiVersion: string
}

export interface CriStatus {
  conditions: Array<{ type: string, status: boolean, reason: string, message: string }>
  /** Verbose details: containerd puts its CRI configuration as JSON under `config`. */
  info: Record<string, string>
}

export interface CallOptions {
  signal?: AbortSignal
}

/** What the doctor needs from the CRI runtime service; tests pass a fake. */
export interface CriApi {
  version: (options?: CallOptions) => Promise<CriVersion>
  status: (options?: CallOptions) => Promise<CriStatus>
}

/** The runtime does not serve the CRI API (CRI plugin disabled, or not containerd). */
export class CriUnavailableError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CriUnavailableError'
  }
}

interface WireVersion { version: string, runtime_name: string, runtime_version: string, runtime_api_version: string }
interface WireStatus {
  status: { conditions: Array<{ type: string, status: boolean, reason: string, message: string }> } | null
  info: Record<string, string>
}

interface Methods {
  version: MethodDefinition<{ version: string }, WireVersion>
  status: MethodDefinition<{ verbose: boolean }, WireStatus>
}

let methods: Methods | undefined

function loadMethods (): Methods {
  if (methods !== undefined) return methods
  // From the sources: src/containerd/proto/; from the bundle (dist/spegel.mjs): dist/proto/, a copy of that directory.
  const file = [new URL('../containerd/proto/cri/api.proto', import.meta.url), new URL('./proto/cri/api.proto', import.meta.url)]
    .map((u) => fileURLToPath(u)).find((f) => existsSync(f))
  if (file === undefined) throw new Error('cri/api.proto not found next to the program')
  const pkg = loadSync(file, { keepCase: true, longs: Number, enums: String, defaults: true })
  const service = pkg['runtime.v1.RuntimeService'] as Record<string, MethodDefinition<never, never>> | undefined
  if (service?.Version === undefined || service.Status === undefined) throw new Error('runtime.v1.RuntimeService is not defined')
  methods = { version: service.Version as unknown as Methods['version'], status: service.Status as unknown as Methods['status'] }
  return methods
}

export type CriClientOptions = ({
  /** containerd's socket: the client opens a channel of its own. */
  socket: string
} | {
  /** A channel to containerd's socket to share (ContainerdClient.channel); its owner closes it. */
  channel: ChannelInterface
}) & {
  /** Deadline of each call in ms (default 5000). */
  timeoutMs?: number
}

/** CRI runtime service client on containerd's socket. */
export class CriClient implements CriApi {
  private readonly grpc: Client
  private readonly ownsChannel: boolean
  private readonly methods: Methods
  private readonly timeoutMs: number

  constructor (options: CriClientOptions) {
    this.methods = loadMethods()
    this.timeoutMs = options.timeoutMs ?? 5000
    if ('channel' in options) {
      // The address is unused: calls go over the given channel.
      this.grpc = new Client('unix:unused', credentials.createInsecure(), { channelOverride: options.channel })
      this.ownsChannel = false
    } else {
      const address = options.socket.startsWith('unix:') ? options.socket : `unix://${options.socket}`
      this.grpc = new Client(address, credentials.createInsecure(), { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 })
      this.ownsChannel = true
    }
  }

  async version (options: CallOptions = {}): Promise<CriVersion> {
    const res = await this.unary(this.methods.version, { version: 'v1' }, options)
    return { runtimeName: res.runtime_name, runtimeVersion: res.runtime_version, runtimeApiVersion: res.runtime_api_version }
  }

  async status (options: CallOptions = {}): Promise<CriStatus> {
    const res = await this.unary(this.methods.status, { verbose: true }, options)
    return { conditions: res.status?.conditions ?? [], info: res.info }
  }

  /** Closes the client's own channel; a shared one stays open. */
  close (): void {
    if (this.ownsChannel) this.grpc.close()
  }

  private async unary<Req, Res> (def: MethodDefinition<Req, Res>, request: Req, options: CallOptions): Promise<Res> {
    options.signal?.throwIfAborted()
    return await new Promise<Res>((resolve, reject) => {
      const onAbort = (): void => { call.cancel() }
      const call = this.grpc.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, request, new Metadata(),
        { deadline: Date.now() + this.timeoutMs }, (err: ServiceError | null, res?: Res) => {
          options.signal?.removeEventListener('abort', onAbort)
          if (err === null && res !== undefined) { resolve(res); return }
          if (options.signal?.aborted === true) { reject(options.signal.reason); return }
          if (err?.code === grpcStatus.UNIMPLEMENTED) {
            reject(new CriUnavailableError('containerd does not serve the CRI runtime.v1 API (is the CRI plugin disabled?)', { cause: err }))
            return
          }
          reject(err ?? new Error('empty CRI response'))
        })
      options.signal?.addEventListener('abort', onAbort, { once: true })
    })
  }
}
