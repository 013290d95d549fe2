/**
 * The transfer buffers every blob byte passes through (local files read by sendfile.ts, peer responses read by
 * peer-client.ts): one process-wide pool of small fixed-size chunks. A transfer holds two to three of them, so a
 * hundred transfers fit in a few MiB; the kernel's socket buffers do the buffering ahead, and the transfer budget
 * (budget.ts) counts the chunks of the transfers that are moving. A transfer whose client is fast may use large
 * buffers (largeChunks chunks each) while its lease grants them. The pool keeps freed buffers for reuse, so a
 * steady load allocates nothing, and after a burst it gives all but a few back.
 */

/** Bytes per read and per socket write (Go's io.Copy uses 32 KiB; 64 KiB halves the calls for the same memory). */
export const chunkSize = 64 * 1024
/**
 * Chunks are cut from slabs of this many. A slab is large enough for glibc to serve it with mmap (the image fixes
 * MALLOC_MMAP_THRESHOLD_ at 128 KiB), which returns an address 16 bytes past a page boundary, so every chunk can
 * start on a page boundary: the kernel copies file pages into a destination that is not cache-line aligned at about
 * half the speed (4.5 against 8 GB/s on the benchmark machine).
 */
const slabChunks = 4
const dataOffset = 4096 - 16
/** Free chunks kept after a burst has ended (one slab's worth). */
const keepWhenIdle = slabChunks
/**
 * Chunks in use and kept free together, beyond which a given-back buffer is dropped (16 MiB, the budget under the
 * chart's limit): what is given back is reused rather than dropped, since a dropped buffer is only freed by a major
 * collection, which V8 runs late for memory outside its heap. Trimmed when idle.
 */
const maxPooled = 256
/** How long the pool waits, once nothing is in use, before giving the rest back. */
const idleTrimMs = 2_000
/**
 * Collections asked for by trims are at least this far apart: each marks the whole heap (tens of ms of CPU on the
 * main thread and V8's helpers), and a node that pulls, then serves one peer after another, went idle every few
 * seconds; a trim within this time of the last collection leaves its buffers to a collection at the end of it.
 */
const minCollectIntervalMs = 30_000

/** Chunks in a large buffer (512 KiB): one read and one write of it cost what one of a chunk costs. */
export const largeChunks = 8
/**
 * Large buffers that may exist at all (8 MiB): they are made once and kept, never dropped, so a transfer switching
 * between small and large buffers leaves no garbage behind (a dropped buffer is only freed by a late major GC).
 */
const maxLarge = 16

const pool: Buffer[] = []
const largePool: Buffer[] = []
/** Large buffers made so far (at most maxLarge). */
let largeMade = 0
/** Chunks handed out (a large buffer counts largeChunks). */
let inUse = 0
let trimTimer: NodeJS.Timeout | undefined
/** Date.now() of the last collection a trim asked for, and the timer of one put off (see minCollectIntervalMs). */
let collectedAt = -Infinity
let collectTimer: NodeJS.Timeout | undefined

/** Lets a transfer hold large buffers while it is fast: a Lease of the transfer budget (budget.ts). */
export interface ChunkAllowance {
  grow: (bytes: number) => boolean
  shrink: (bytes: number) => void
}

/** What a large buffer costs beyond the chunk a transfer's reservation covers. */
export const largeExtraBytes = (largeChunks - 1) * chunkSize

/**
 * A large buffer if `allowance` grants its extra bytes and one is free, else undefined (the grant is given back).
 * Without an allowance, never: large buffers are for transfers the budget knows.
 */
export function takeLargeFor (allowance: ChunkAllowance | undefined): Buffer | undefined {
  if (allowance === undefined || !allowance.grow(largeExtraBytes)) return undefined
  const buffer = takeLargeBuffer()
  if (buffer === undefined) allowance.shrink(largeExtraBytes)
  return buffer
}

/** Gives back a buffer taken with takeBuffer or takeLargeFor, and a large one's grant. */
export function giveBufferFor (buffer: Buffer, allowance: ChunkAllowance | undefined): void {
  if (buffer.length > chunkSize) allowance?.shrink(largeExtraBytes)
  giveBuffer(buffer)
}

/** A chunk-sized buffer, from the pool when one is free. Give it back with giveBuffer once nothing refers to it. */
export function takeBuffer (): Buffer {
  inUse++
  cancelTrim()
  const free = pool.pop()
  if (free !== undefined) return free
  const slab = Buffer.allocUnsafeSlow(dataOffset + slabChunks * chunkSize)
  for (let i = slabChunks - 1; i > 0; i--) pool.push(slab.subarray(dataOffset + i * chunkSize, dataOffset + (i + 1) * chunkSize))
  return slab.subarray(dataOffset, dataOffset + chunkSize)
}

/** A buffer of largeChunks chunks, or undefined when all maxLarge of them are in use. */
function takeLargeBuffer (): Buffer | undefined {
  let buffer = largePool.pop()
  if (buffer === undefined) {
    if (largeMade >= maxLarge) return undefined
    largeMade++
    buffer = Buffer.allocUnsafeSlow(dataOffset + largeChunks * chunkSize).subarray(dataOffset)
  }
  inUse += largeChunks
  cancelTrim()
  return buffer
}

/** Returns a buffer taken with takeBuffer or takeLargeBuffer; it is reused, or (a chunk) dropped when the pool is full. */
export function giveBuffer (buffer: Buffer): void {
  const large = buffer.length > chunkSize
  inUse = Math.max(0, inUse - (large ? largeChunks : 1))
  if (large) largePool.push(buffer)
  // A chunk is kept while chunks in use and kept together stay within a budget's worth (maxPooled).
  else if (inUse + pool.length + 1 <= maxPooled) pool.push(buffer)
  if (inUse === 0 && (pool.length > keepWhenIdle || largePool.length > 0) && trimTimer === undefined) {
    trimTimer = setTimeout(trim, idleTrimMs)
    trimTimer.unref()
  }
}

/**
 * Forgets a buffer taken with takeBuffer that cannot come back (a socket may still hold it after its response was
 * destroyed): it is left to the GC, and no longer counts as in use.
 */
export function abandonBuffer (buffer: Buffer): void {
  const large = buffer.length > chunkSize
  inUse = Math.max(0, inUse - (large ? largeChunks : 1))
  if (large) largeMade--
}

function cancelTrim (): void {
  if (trimTimer !== undefined) {
    clearTimeout(trimTimer)
    trimTimer = undefined
  }
}

export interface BufferStats {
  /** Chunks handed out and not yet given back. */
  inUse: number
  /** Free chunks kept for reuse. */
  pooled: number
  chunkSize: number
}

export function bufferStats (): BufferStats {
  return { inUse, pooled: pool.length + largePool.length * largeChunks, chunkSize }
}

/**
 * Drops the free buffers beyond a few, keeping chunks of one slab so the others can be freed whole. Their memory
 * belongs to ArrayBuffers that only a garbage collection frees; an idle daemon allocates nothing on the JavaScript
 * heap, so none would come for a long time. When the process runs with --expose-gc (the image does), one collection
 * is asked for (at most one per minCollectIntervalMs).
 */
function trim (): void {
  trimTimer = undefined
  if (inUse !== 0) return
  largeMade -= largePool.length
  largePool.length = 0
  const slab = pool[pool.length - 1]?.buffer
  const kept = pool.filter((b) => b.buffer === slab).slice(0, keepWhenIdle)
  pool.length = 0
  pool.push(...kept)
  collect()
}

/** Asks for one major collection, or, within minCollectIntervalMs of the last, for one when that time is up. */
function collect (): void {
  const gc = (globalThis as { gc?: (options?: { type?: 'major' | 'minor', execution?: 'sync' | 'async' }) => unknown }).gc
  if (gc === undefined) return
  const wait = collectedAt + minCollectIntervalMs - Date.now()
  if (wait > 0) {
    if (collectTimer === undefined) {
      collectTimer = setTimeout(() => {
        collectTimer = undefined
        collect()
      }, wait)
      collectTimer.unref()
    }
    return
  }
  collectedAt = Date.now()
  gc({ type: 'major', execution: 'async' })
}
