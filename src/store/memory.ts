import { Readable } from 'node:stream'
import { parseDigest, sha256 } from '../oci/digest.ts'
import { fingerprintMediaType } from '../oci/fingerprint.ts'
import { parseImageName } from '../oci/reference.ts'
import { NotFoundError } from './errors.ts'
import type { ContentStore, Descriptor, Download, ImageRecord, ReadOptions, StoreChange, StoreOptions } from './types.ts'

export interface MemoryImage {
  /** Full name, `<registry>/<repository>:<tag>` or `<registry>/<repository>@<digest>`. */
  name: string
  digest: string
}

/** An in-memory ContentStore for unit tests; it passes the same conformance suite as the containerd store. */
export class MemoryStore implements ContentStore {
  readonly name = 'memory'
  private readonly images = new Map<string, string>()
  private readonly blobs = new Map<string, { bytes: Uint8Array, mediaType: string }>()
  private readonly downloads = new Map<string, { total: number, state: { chunks: Buffer[], size: number, aborted: boolean, waiters: Array<() => void> } }>()
  /** One per `changes()` iteration in progress. */
  private readonly subscribers = new Set<(change: StoreChange) => void>()

  /** Adds content and returns its digest. The media type is guessed from the bytes unless given. */
  addBlob (bytes: Uint8Array | string, mediaType?: string): string {
    const data = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes
    const digest = sha256(data)
    this.blobs.set(digest, { bytes: data, mediaType: mediaType ?? fingerprintMediaType(data) })
    this.emit({ contentDeleted: false, created: digest })
    return digest
  }

  deleteBlob (digest: string): void {
    if (this.blobs.delete(digest)) this.emit({ contentDeleted: true })
  }

  /** Deletes content without a change, as containerd's garbage collector does (layers discarded after unpacking). */
  collectBlob (digest: string): void {
    this.blobs.delete(digest)
  }

  addImage (name: string, digest: string): void {
    parseImageName(name)
    this.images.set(name, digest)
    this.emit({ contentDeleted: false })
  }

  deleteImage (name: string): void {
    if (this.images.delete(name)) this.emit({ contentDeleted: false })
  }

  /** Every change from the moment the iteration starts; nothing is dropped while the caller is busy. */
  async * changes (signal: AbortSignal): AsyncGenerator<StoreChange> {
    const queue: StoreChange[] = []
    let wake: (() => void) | undefined
    const push = (change: StoreChange): void => {
      queue.push(change)
      wake?.()
    }
    const onAbort = (): void => { wake?.() }
    this.subscribers.add(push)
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      while (!signal.aborted) {
        const change = queue.shift()
        if (change !== undefined) {
          yield change
          continue
        }
        await new Promise<void>((resolve) => { wake = resolve })
        wake = undefined
      }
    } finally {
      this.subscribers.delete(push)
      signal.removeEventListener('abort', onAbort)
    }
  }

  private emit (change: StoreChange): void {
    for (const push of this.subscribers) push({ ...change })
  }

  async resolve (reference: string, options?: StoreOptions): Promise<string> {
    options?.signal?.throwIfAborted()
    const digest = this.images.get(reference)
    if (digest === undefined) throw new NotFoundError(`image ${reference} not found`)
    return digest
  }

  async descriptor (digest: string, options?: StoreOptions): Promise<Descriptor> {
    options?.signal?.throwIfAborted()
    const blob = this.blobs.get(parseDigest(digest).value)
    if (blob === undefined) throw new NotFoundError(`content ${digest} not found`)
    return { mediaType: blob.mediaType, digest, size: blob.bytes.byteLength }
  }

  async open (digest: string, options?: ReadOptions): Promise<Readable> {
    options?.signal?.throwIfAborted()
    const blob = this.blobs.get(parseDigest(digest).value)
    if (blob === undefined) throw new NotFoundError(`content ${digest} not found`)
    const start = options?.start ?? 0
    const end = options?.end ?? blob.bytes.byteLength - 1
    const slice = blob.bytes.subarray(start, end + 1)
    const chunks: Uint8Array[] = []
    for (let i = 0; i < slice.byteLength; i += 64 * 1024) chunks.push(slice.subarray(i, i + 64 * 1024))
    return Readable.from(chunks, { objectMode: false })
  }

  /**
   * Starts a simulated download of content with this digest and size, as containerd's pull in progress; `append`
   * adds bytes, `abort` ends it (readers then fail), and once all bytes are in it becomes ordinary content.
   */
  startDownload (digest: string, total: number): { append: (bytes: Uint8Array) => void, abort: () => void } {
    const d = parseDigest(digest).value
    const state: { chunks: Buffer[], size: number, aborted: boolean, waiters: Array<() => void> } = { chunks: [], size: 0, aborted: false, waiters: [] }
    this.downloads.set(d, { total, state })
    const wake = (): void => { for (const w of state.waiters.splice(0)) w() }
    return {
      append: (bytes) => {
        state.chunks.push(Buffer.from(bytes))
        state.size += bytes.byteLength
        if (state.size >= total) {
          this.downloads.delete(d)
          this.addBlob(Buffer.concat(state.chunks))
        }
        wake()
      },
      abort: () => {
        state.aborted = true
        this.downloads.delete(d)
        wake()
      },
    }
  }

  async download (digest: string, options?: StoreOptions): Promise<Download | undefined> {
    options?.signal?.throwIfAborted()
    const d = parseDigest(digest).value
    const entry = this.downloads.get(d)
    if (entry === undefined) return undefined
    const { total, state } = entry
    return {
      digest: d,
      total,
      read: async function * (o?: StoreOptions) {
        let index = 0
        let read = 0
        while (read < total) {
          o?.signal?.throwIfAborted()
          const chunk = state.chunks[index]
          if (chunk !== undefined) {
            index++
            read += chunk.length
            yield chunk
            continue
          }
          if (state.aborted) throw new Error(`the download of ${d} was abandoned`)
          await new Promise<void>((resolve) => { state.waiters.push(resolve) })
        }
      },
    }
  }

  async listImages (options?: StoreOptions): Promise<ImageRecord[]> {
    options?.signal?.throwIfAborted()
    const out: ImageRecord[] = []
    for (const [name, digest] of this.images) {
      const ref = parseImageName(name)
      const record: ImageRecord = {
        name,
        registry: ref.registry,
        repository: ref.repository,
        digest,
        mediaType: this.blobs.get(digest)?.mediaType ?? 'application/octet-stream',
      }
      if (ref.tag !== undefined) record.tag = ref.tag
      out.push(record)
    }
    return out
  }

  async close (): Promise<void> {}
}
