import { createReadStream } from 'node:fs'
import { access, open as openFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { status } from '@grpc/grpc-js'
import type { Logger } from '../log/index.ts'
import { parseDigest } from '../oci/digest.ts'
import { fingerprintMediaType, maxFingerprintSize } from '../oci/fingerprint.ts'
import { MediaType } from '../oci/mediatypes.ts'
import { parseImageName } from '../oci/reference.ts'
import { NotFoundError, StoreUnavailableError } from '../store/errors.ts'
import type { ContentStore, Descriptor, Download, ImageRecord, ReadOptions, StoreChange, StoreOptions } from '../store/types.ts'
import { walkImage } from '../store/walk.ts'
import type { MediaTypeLearner, WalkOptions } from '../store/walk.ts'
import { ContainerdClient, grpcCode } from './client.ts'
import type { ContainerdApi } from './client.ts'
import { defaultNamespace, defaultSocket } from './constants.ts'
import { followDownload, IngestDirectory } from './ingest.ts'
import { LruMap } from './lru.ts'

export interface ContainerdStoreOptions {
  /** A client to use; the store then does not close it. Otherwise one is made from socket and namespace. */
  client?: ContainerdApi
  /** containerd's gRPC socket, when no client is given (default `/run/containerd/containerd.sock`). */
  socket?: string
  /** containerd namespace, when no client is given (default `k8s.io`). */
  namespace?: string
  /**
   * containerd's content directory (`…/io.containerd.content.v1.content`), read directly for speed. `''` (the
   * default) asks containerd for it once; when it cannot be read, content is streamed over gRPC instead.
   */
  contentPath?: string
  logger?: Pick<Logger, 'warn' | 'debug'>
  /** How many media types learned from manifests to remember (default 100 000). */
  learnedMediaTypes?: number
  /** How many fingerprinted media types to remember (default 1 000). */
  fingerprintedMediaTypes?: number
  /**
   * How long content containerd confirmed is taken as held without asking again, as long as its file is still in
   * the (verified) content directory. Default 0: always ask. Only while `changes()` is being followed: the content
   * deletions it passes on are what keeps the remembered content true.
   */
  confirmedTtlMs?: number
}

const contentPluginType = 'io.containerd.content.v1'
const readHighWaterMark = 1024 * 1024
const noLogger: Pick<Logger, 'warn' | 'debug'> = { warn: () => {}, debug: () => {} }

/**
 * The node's containerd as a ContentStore. Tags resolve through the images service, sizes come from the content
 * service, and blobs are read straight from containerd's content directory (falling back to gRPC reads). Media types
 * come from what manifests and image records declare (see learnMediaType and walk) or, for small content nobody
 * described, from the bytes.
 */
export class ContainerdStore implements ContentStore, MediaTypeLearner {
  readonly name = 'containerd'
  private readonly client: ContainerdApi
  private readonly ownsClient: boolean
  private readonly logger: Pick<Logger, 'warn' | 'debug'>
  private readonly configuredContentPath: string
  private contentRootPromise: Promise<string> | undefined
  private readonly learned: LruMap<string, string>
  private readonly fingerprints: LruMap<string, string>
  private readonly fingerprinting = new Map<string, Promise<string>>()
  private warnedDirectReads = false
  /**
   * Set once a blob containerd reports present was found in the content directory: from then on a blob missing from
   * the directory is known to be absent without asking containerd. Until then (or when the directory turns out not to
   * be containerd's) every lookup goes over gRPC.
   */
  private directoryVerified = false
  private probed = false
  /** Content containerd confirmed lately, with its size: re-confirmed after confirmedTtlMs (files are checked always). */
  private readonly confirmed = new LruMap<string, { size: number, at: number }>(4096)
  private readonly confirmedTtlMs: number
  /** `changes()` iterations in progress: without one, a deletion could go unseen, so nothing is remembered. */
  private following = 0
  /** How often nobody followed `changes()` any more. */
  private unfollowed = 0

  constructor (options: ContainerdStoreOptions = {}) {
    if (options.client !== undefined) {
      this.client = options.client
      this.ownsClient = false
    } else {
      this.client = new ContainerdClient({
        socket: options.socket ?? defaultSocket,
        namespace: options.namespace ?? defaultNamespace,
      })
      this.ownsClient = true
    }
    this.logger = options.logger ?? noLogger
    this.configuredContentPath = options.contentPath ?? ''
    this.learned = new LruMap(options.learnedMediaTypes ?? 100_000)
    this.fingerprints = new LruMap(options.fingerprintedMediaTypes ?? 1_000)
    this.confirmedTtlMs = options.confirmedTtlMs ?? 0
  }

  async resolve (reference: string, options?: StoreOptions): Promise<string> {
    try {
      const image = await this.client.getImage(reference, options)
      this.learnMediaType(image.target)
      return image.target.digest
    } catch (err) {
      // A name containerd cannot even hold is a name it does not hold.
      if (grpcCode(err) === status.INVALID_ARGUMENT) throw new NotFoundError(`image ${reference} not found`)
      throw err
    }
  }

  async descriptor (digest: string, options?: StoreOptions): Promise<Descriptor> {
    const parsed = parseDigest(digest)
    const d = parsed.value
    this.probeDirectory()
    // Most lookups of a mirror are misses (content peers hold): answer those from the directory, a tenth of the time
    // of a gRPC call. A file that exists goes to containerd, which decides what this namespace holds, unless it did
    // so moments ago (a HEAD is followed by a GET, a peer asks what containerd just asked for).
    const root = this.directoryVerified ? await this.contentRoot(options?.signal) : ''
    if (root !== '' && !await exists(join(root, 'blobs', parsed.algorithm, parsed.hex))) {
      this.confirmed.delete(d)
      throw new NotFoundError(`content ${d} not found`)
    }
    const remember = this.confirmedTtlMs > 0 && this.following > 0
    const gaps = this.unfollowed
    const recent = root !== '' && remember ? this.confirmed.get(d) : undefined
    let size: number
    if (recent !== undefined && performance.now() - recent.at < this.confirmedTtlMs) {
      options?.signal?.throwIfAborted()
      size = recent.size
    } else {
      size = (await this.client.contentInfo(d, options)).size
      if (!this.directoryVerified) await this.verifyDirectory(parsed, options?.signal)
      // Not if the feed stopped meanwhile: a deletion in the gap would go unseen.
      if (remember && gaps === this.unfollowed) this.confirmed.set(d, { size, at: performance.now() })
    }
    let mediaType = this.learned.get(d) ?? this.fingerprints.get(d)
    if (mediaType === undefined) {
      mediaType = size > maxFingerprintSize ? MediaType.octetStream : await this.fingerprint(d, options)
    }
    return { mediaType, digest: d, size }
  }

  async open (digest: string, options: ReadOptions = {}): Promise<Readable> {
    // parseDigest admits only `<algorithm>:<hex>`, so the path below can never leave the content directory.
    const d = parseDigest(digest)
    const signal = options.signal
    signal?.throwIfAborted()
    const start = options.start ?? 0
    const end = options.end
    if (end !== undefined && end < start) return Readable.from([], { objectMode: false })
    const root = await this.contentRoot(signal)
    if (root !== '') {
      const path = join(root, 'blobs', d.algorithm, d.hex)
      try {
        const handle = await openFile(path, 'r')
        return createReadStream(path, { fd: handle, start, end, highWaterMark: readHighWaterMark, signal })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.warnDirectReads(root, err)
      }
    }
    return await this.openOverGrpc(d.value, start, end, signal, root)
  }

  /** The blob's file in the content directory, opened, for the registry's fast path; undefined when unreadable. */
  async openFile (digest: string, options: StoreOptions = {}): Promise<FileHandle | undefined> {
    const d = parseDigest(digest)
    const root = await this.contentRoot(options.signal)
    if (root === '') return undefined
    try {
      return await openFile(join(root, 'blobs', d.algorithm, d.hex), 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.warnDirectReads(root, err)
      // Served content (containerd has it) missing from the directory: the directory cannot answer misses either.
      else this.directoryVerified = false
      return undefined
    }
  }

  /** The download of `digest` containerd has in progress, read from its ingest directory; undefined without one. */
  async download (digest: string, options: StoreOptions = {}): Promise<Download | undefined> {
    const d = parseDigest(digest)
    const root = await this.contentRoot(options.signal)
    if (root === '') return undefined
    const active = await new IngestDirectory({ contentPath: root }).find(d.value)
    if (active === undefined) return undefined
    return { digest: active.digest, total: active.total, read: (o = {}) => followDownload(active, o.signal !== undefined ? { signal: o.signal } : {}) }
  }

  /**
   * containerd's event stream (image create/update/delete, content create/delete) as store changes. A content
   * deletion is dropped from the content remembered as confirmed (confirmedTtlMs) before it is passed on.
   */
  async * changes (signal: AbortSignal): AsyncGenerator<StoreChange> {
    this.following++
    try {
      for await (const event of this.client.subscribe(['topic~="^/images/"', 'topic~="^/content/"'], { signal })) {
        const p = event.payload
        if (p.type === 'content-delete') this.confirmed.delete(p.digest)
        yield p.type === 'content-create' ? { contentDeleted: false, created: p.digest } : { contentDeleted: p.type === 'content-delete' }
      }
    } catch (err) {
      if (signal.aborted) return
      throw err
    } finally {
      // Deletions while nobody follows (the stream broke, containerd restarted) are never seen: forget everything.
      if (--this.following === 0) {
        this.unfollowed++
        this.confirmed.clear()
      }
    }
  }

  async listImages (options?: StoreOptions): Promise<ImageRecord[]> {
    // containerd's CRI also names images by their bare config digest (`sha256:…`); those have no `/`.
    const images = await this.client.listImages(['name~="^.+/"'], options)
    const records: ImageRecord[] = []
    for (const image of images) {
      let ref
      try {
        ref = parseImageName(image.name)
      } catch {
        continue
      }
      this.learnMediaType(image.target)
      const record: ImageRecord = {
        name: image.name,
        registry: ref.registry,
        repository: ref.repository,
        digest: image.target.digest,
        mediaType: image.target.mediaType !== '' ? image.target.mediaType : MediaType.octetStream,
      }
      if (ref.tag !== undefined) record.tag = ref.tag
      records.push(record)
    }
    return records
  }

  /** Remembers the media type a manifest, index or image record declares for content. */
  learnMediaType (descriptor: Pick<Descriptor, 'digest' | 'mediaType'>): void {
    if (descriptor.mediaType === '' || this.learned.get(descriptor.digest) === descriptor.mediaType) return
    try {
      this.learned.set(parseDigest(descriptor.digest).value, descriptor.mediaType)
    } catch {
      // Not a digest: nothing to remember.
    }
  }

  /** walkImage over this store; the media types it meets are learned. */
  async walk (digest: string, options?: WalkOptions): Promise<Descriptor[]> {
    return await walkImage(this, digest, options)
  }

  async close (): Promise<void> {
    if (this.ownsClient) this.client.close()
  }

  /** The content directory, or '' for gRPC reads. Asked of containerd once when not configured. */
  private async contentRoot (signal: AbortSignal | undefined): Promise<string> {
    if (this.configuredContentPath !== '') return this.configuredContentPath
    this.contentRootPromise ??= this.detectContentRoot()
    try {
      return await this.contentRootPromise
    } catch (err) {
      // Not known yet (containerd down): read over gRPC this time and ask again next time.
      this.contentRootPromise = undefined
      signal?.throwIfAborted()
      this.logger.debug({ err }, 'could not ask containerd for its content directory')
      return ''
    }
  }

  private async detectContentRoot (): Promise<string> {
    const plugin = await this.client.pluginInfo(contentPluginType, 'content')
    const root = plugin?.exports.root ?? ''
    if (root === '') this.logger.warn({}, 'containerd does not report its content directory; reading content over gRPC')
    return root
  }

  private async openOverGrpc (digest: string, start: number, end: number | undefined, signal: AbortSignal | undefined, root: string): Promise<Readable> {
    // Info first, so absent content rejects here instead of erroring on the returned stream.
    await this.client.contentInfo(digest, { signal })
    if (root !== '') this.warnDirectReads(root, new Error(`blob ${digest} is not in the content directory`))
    const size = end === undefined ? 0 : end - start + 1
    return this.client.readContent(digest, { offset: start, size, signal })
  }

  /**
   * Once, in the background: checks the content directory against the first blob containerd lists, so a node that
   * has content but has not been asked for any yet answers misses from the directory too.
   */
  private probeDirectory (): void {
    if (this.probed) return
    this.probed = true
    const ac = new AbortController()
    void (async () => {
      for await (const info of this.client.listContent([], { signal: ac.signal })) {
        await this.verifyDirectory(parseDigest(info.digest), undefined)
        break
      }
    })().catch(() => {}).finally(() => { ac.abort(probeDone) })
  }

  /** Checks that a blob containerd holds is in the content directory, which shows the directory is containerd's. */
  private async verifyDirectory (d: { algorithm: string, hex: string }, signal: AbortSignal | undefined): Promise<void> {
    const root = await this.contentRoot(signal)
    if (root === '') return
    if (await exists(join(root, 'blobs', d.algorithm, d.hex))) this.directoryVerified = true
    else this.warnDirectReads(root, new Error(`blob ${d.algorithm}:${d.hex} is not in the content directory`))
  }

  private warnDirectReads (root: string, err: unknown): void {
    if (this.warnedDirectReads) return
    this.warnedDirectReads = true
    this.logger.warn({ err, contentPath: root }, 'cannot read containerd content directly; reading over gRPC')
  }

  private async fingerprint (digest: string, options?: StoreOptions): Promise<string> {
    let pending = this.fingerprinting.get(digest)
    if (pending === undefined) {
      // Shared by concurrent callers, so it does not follow any one caller's signal; the read is small and local.
      pending = this.readSmall(digest).then((bytes) => {
        const mediaType = fingerprintMediaType(bytes)
        this.fingerprints.set(digest, mediaType)
        return mediaType
      }).finally(() => { this.fingerprinting.delete(digest) })
      this.fingerprinting.set(digest, pending)
    }
    const mediaType = await pending
    options?.signal?.throwIfAborted()
    return mediaType
  }

  private async readSmall (digest: string): Promise<Uint8Array> {
    const stream = await this.open(digest)
    const chunks: Buffer[] = []
    let length = 0
    for await (const chunk of stream) {
      const buf = chunk as Buffer
      length += buf.byteLength
      if (length > maxFingerprintSize) {
        stream.destroy()
        throw new StoreUnavailableError(`content ${digest} grew beyond its recorded size`)
      }
      chunks.push(buf)
    }
    return Buffer.concat(chunks, length)
  }
}

const probeDone = new Error('content directory probe done')

/** True when the file exists; false only when it does not (other errors, e.g. permissions, count as unknown: true). */
async function exists (path: string): Promise<boolean> {
  try {
    await access(path)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT'
  }
}
