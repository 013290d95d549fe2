import { open, readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Downloads containerd has in progress, read from its content directory. While containerd fetches a blob it writes
 * `<content dir>/ingest/<sha256 of the ingest ref>/` with `ref` (e.g. `k8s.io/1/layer-sha256:<hex>`: the digest is at
 * its end), `total` (the expected size, from the descriptor) and the growing `data` file. When the download is done
 * containerd renames `data` to `blobs/sha256/<hex>`, and when it is aborted it removes the directory. Either way an
 * open `data` file keeps its bytes, so a reader that opened it follows the same inode to the end or notices it stopped.
 */

/** One blob containerd is downloading now. */
export interface ActiveDownload {
  digest: string
  /** Expected size in bytes. */
  total: number
  /** The ingest directory. */
  dir: string
}

/** The download ended, stalled or shrank before all its bytes were written. */
export class DownloadAbandonedError extends Error {
  readonly reason: 'gone' | 'stalled' | 'shrank'
  constructor (reason: 'gone' | 'stalled' | 'shrank', message: string) {
    super(message)
    this.name = 'DownloadAbandonedError'
    this.reason = reason
  }
}

const refDigest = /(sha256:[a-f0-9]{64})$/

/** Lists and finds active downloads in one content directory. */
export class IngestDirectory {
  private readonly ingestPath: string

  constructor (init: { contentPath: string }) {
    this.ingestPath = join(init.contentPath, 'ingest')
  }

  /** Every download in progress whose ref names a digest and whose expected size is known. */
  async list (): Promise<ActiveDownload[]> {
    let names: string[]
    try {
      names = await readdir(this.ingestPath)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    const found: ActiveDownload[] = []
    for (const name of names) {
      const download = await this.read(join(this.ingestPath, name))
      if (download !== undefined) found.push(download)
    }
    return found
  }

  /** The download of `digest` in progress, if there is one. */
  async find (digest: string): Promise<ActiveDownload | undefined> {
    return (await this.list()).find((d) => d.digest === digest)
  }

  private async read (dir: string): Promise<ActiveDownload | undefined> {
    try {
      const ref = (await readFile(join(dir, 'ref'), 'utf8')).trim()
      const m = refDigest.exec(ref)
      if (m === null) return undefined
      const total = Number((await readFile(join(dir, 'total'), 'utf8')).trim())
      if (!Number.isSafeInteger(total) || total <= 0) return undefined
      return { digest: m[1] as string, total, dir }
    } catch {
      // Committed or aborted while we looked: not in progress any more.
      return undefined
    }
  }
}

export interface FollowOptions {
  /** Abandon the download when its file has not grown for this long (default 3 s). */
  stallTimeoutMs?: number
  /** How often the file's size is checked while waiting for more bytes (default 10 ms). */
  pollMs?: number
  /** Bytes per read (default 128 KiB: the download arrives at the upstream's pace, a bigger read gains nothing). */
  chunkSize?: number
  signal?: AbortSignal
}

/**
 * Reads a blob while containerd downloads it, from byte 0 to `total`, as its bytes arrive. Throws
 * DownloadAbandonedError when the download disappears before this reader opened it, stops growing for the stall
 * timeout, or shrinks (restarted from scratch). The bytes are whatever containerd has written: the reader's consumer
 * verifies them against the digest, as it does for any peer's bytes. Every chunk is a view of one buffer, read once
 * for the whole follow: it is valid until the next chunk is asked for (copy it to keep it). A fresh buffer per read
 * left hundreds of them for the garbage collector in a cold rollout.
 */
export async function * followDownload (download: ActiveDownload, options: FollowOptions = {}): AsyncGenerator<Buffer> {
  const stallTimeoutMs = options.stallTimeoutMs ?? 3_000
  const pollMs = options.pollMs ?? 10
  const chunkSize = options.chunkSize ?? 128 * 1024
  let file
  try {
    file = await open(join(download.dir, 'data'), 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DownloadAbandonedError('gone', `the download of ${download.digest} is no longer in progress`)
    throw err
  }
  try {
    const buffer = Buffer.allocUnsafe(Math.max(1, Math.min(chunkSize, download.total)))
    let offset = 0
    let lastGrowth = performance.now()
    while (offset < download.total) {
      options.signal?.throwIfAborted()
      const { size } = await file.stat()
      if (size < offset) throw new DownloadAbandonedError('shrank', `the download of ${download.digest} restarted (${size} bytes, ${offset} already read)`)
      if (size === offset) {
        if (performance.now() - lastGrowth > stallTimeoutMs) {
          throw new DownloadAbandonedError('stalled', `the download of ${download.digest} made no progress for ${stallTimeoutMs} ms at byte ${offset} of ${download.total}`)
        }
        await sleep(pollMs, undefined, options.signal !== undefined ? { signal: options.signal } : {})
        continue
      }
      lastGrowth = performance.now()
      const available = Math.min(size, download.total)
      while (offset < available) {
        const { bytesRead } = await file.read(buffer, 0, Math.min(buffer.length, available - offset), offset)
        if (bytesRead === 0) break
        offset += bytesRead
        yield buffer.subarray(0, bytesRead)
      }
    }
  } finally {
    await file.close()
  }
}

/** True when the blob is in the content store (the download completed). */
export async function isCommitted (contentPath: string, digest: string): Promise<boolean> {
  try {
    await stat(join(contentPath, 'blobs', 'sha256', digest.slice('sha256:'.length)))
    return true
  } catch {
    return false
  }
}
