/**
 * The transfer buffers every blob byte passes through (local files read by sendfile.ts, peer responses read by
 * peer-client.ts): one process-wide pool of fixed-size chunks. The transfer budget (budget.ts) bounds how many are in
 * use at once; the pool keeps freed ones for reuse, so a steady load allocates nothing, and after a burst it gives all
 * but a few back, so the memory is returned instead of staying resident until some later GC.
 */

/** Bytes per read and per socket write. */
export const chunkSize = 512 * 1024
/**
 * Where the data starts in each allocated buffer. glibc serves an allocation this large with mmap (the image fixes
 * MALLOC_MMAP_THRESHOLD_ below it) and returns the address 16 bytes past a page boundary. The kernel copies file pages
 * into a destination that is not cache-line aligned at about half the speed (4.5 against 8 GB/s on the benchmark
 * machine), so the data starts on the next page boundary. Unaligned buffers cost a quarter of the serving throughput.
 */
const dataOffset = 4096 - 16
/** Free buffers kept after a burst has ended. */
const keepWhenIdle = 2
/** How long the pool waits, once nothing is in use, before giving the rest back. */
const idleTrimMs = 2_000

const pool: Buffer[] = []
let maxPooled = 16
let inUse = 0
let trimTimer: NodeJS.Timeout | undefined

/** A chunk-sized buffer, from the pool when one is free. Give it back with giveBuffer once nothing refers to it. */
export function takeBuffer (): Buffer {
  inUse++
  if (trimTimer !== undefined) {
    clearTimeout(trimTimer)
    trimTimer = undefined
  }
  return pool.pop() ?? Buffer.allocUnsafe(dataOffset + chunkSize).subarray(dataOffset)
}

/** Returns a buffer taken with takeBuffer; it is reused, or dropped when the pool is full. */
export function giveBuffer (buffer: Buffer): void {
  inUse = Math.max(0, inUse - 1)
  if (pool.length < maxPooled) pool.push(buffer)
  if (inUse === 0 && pool.length > keepWhenIdle && trimTimer === undefined) {
    trimTimer = setTimeout(trim, idleTrimMs)
    trimTimer.unref()
  }
}

/** Sets how many free buffers are kept while transfers run (the budget's size in chunks). */
export function setPoolLimit (buffers: number): void {
  maxPooled = Math.max(keepWhenIdle, buffers)
  if (pool.length > maxPooled) pool.length = maxPooled
}

export interface BufferStats {
  /** Buffers handed out and not yet given back. */
  inUse: number
  /** Free buffers kept for reuse. */
  pooled: number
  chunkSize: number
}

export function bufferStats (): BufferStats {
  return { inUse, pooled: pool.length, chunkSize }
}

/**
 * Drops the free buffers beyond a few. Their memory belongs to ArrayBuffers that only a garbage collection frees;
 * an idle daemon allocates nothing on the JavaScript heap, so none would come for a long time. When the process runs
 * with --expose-gc (the image does), one collection is asked for now.
 */
function trim (): void {
  trimTimer = undefined
  if (inUse !== 0 || pool.length <= keepWhenIdle) return
  pool.length = keepWhenIdle
  const gc = (globalThis as { gc?: (options?: { type?: 'major' | 'minor', execution?: 'sync' | 'async' }) => unknown }).gc
  gc?.({ type: 'major', execution: 'async' })
}
