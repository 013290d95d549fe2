import type { FileHandle } from 'node:fs/promises'
import type { Readable } from 'node:stream'

/** What the registry needs to know to serve one piece of content. */
export interface Descriptor {
  mediaType: string
  digest: string
  size: number
}

/** One image name the store holds, e.g. `docker.io/library/busybox:1.37.0` → sha256:…. */
export interface ImageRecord {
  /** The full name as the store knows it. */
  name: string
  /** Registry host (with port), e.g. `docker.io`, `10.0.0.2:5000`. */
  registry: string
  repository: string
  /** Absent when the image is known only by digest. */
  tag?: string
  /** Digest of the image's top-level manifest or index. */
  digest: string
  mediaType: string
}

export interface StoreOptions {
  signal?: AbortSignal
}

export interface ReadOptions extends StoreOptions {
  /** First byte to read (default 0). */
  start?: number
  /** Last byte to read, inclusive (default: the last byte). */
  end?: number
}

/** A blob this node is downloading now (containerd's pull in progress), readable from byte 0 as its bytes arrive. */
export interface Download {
  digest: string
  /** Expected size in bytes. */
  total: number
  /**
   * Yields the bytes from 0 to `total` as they are written; throws when the download stalls, restarts or is
   * abandoned. The bytes are not verified: whoever serves them must check them against the digest, or let the
   * receiver do so. A chunk may be a view of a buffer the reader reuses: it is valid until the next one is asked for.
   */
  read: (options?: StoreOptions) => AsyncGenerator<Buffer>
}

/** One change in the store, as `ContentStore.changes` reports it. */
export interface StoreChange {
  /** Content was deleted: whatever was derived from the store's content (an image walk) may no longer hold. */
  contentDeleted: boolean
  /**
   * Digest of content that just landed (containerd ≥ 2.1 emits `/content/create` per blob), before the image it
   * belongs to is complete.
   */
  created?: string
}

/**
 * Read access to a node's image and content stores.
 * Implementations throw NotFoundError for absent tags or content and StoreUnavailableError when the backend cannot
 * be reached; both are in ./errors.ts.
 */
export interface ContentStore {
  readonly name: string
  /** Resolves a full image name `<registry>/<repository>:<tag>` to the digest it points at. */
  resolve: (reference: string, options?: StoreOptions) => Promise<string>
  /** Size and media type of the content with this digest. */
  descriptor: (digest: string, options?: StoreOptions) => Promise<Descriptor>
  /** Streams the content, or one byte range of it. The caller must consume or destroy the stream. */
  open: (digest: string, options?: ReadOptions) => Promise<Readable>
  /**
   * Optional fast path: an open file holding the content, for stores that keep content in plain files (containerd's
   * content directory). Undefined when the content must be read through `open`. The caller closes the handle.
   */
  openFile?: (digest: string, options?: StoreOptions) => Promise<FileHandle | undefined>
  /** Optional: the download of `digest` this node has in progress, if any (herd protection serves it to peers). */
  download?: (digest: string, options?: StoreOptions) => Promise<Download | undefined>
  /** Every image name the store holds. */
  listImages: (options?: StoreOptions) => Promise<ImageRecord[]>
  /**
   * The store's changes as they happen: images created, updated or deleted, content created or deleted. A change is
   * reported once the store's own answers reflect it. Changes made before the iteration starts are not reported. Ends
   * (without throwing) when `signal` aborts; throws when the feed breaks (containerd restarted): the caller subscribes
   * again and re-reads the store, as what happened in between is lost.
   */
  changes: (signal: AbortSignal) => AsyncIterable<StoreChange>
  close: () => Promise<void>
}
