import type { FileHandle } from 'node:fs/promises'
import type { ServerResponse } from 'node:http'

/** Bytes per read and per socket write. */
const chunkSize = 512 * 1024
/**
 * Where the data starts in each allocated buffer. glibc serves an allocation this large with mmap (the image fixes
 * MALLOC_MMAP_THRESHOLD_ below it) and returns the address 16 bytes past a page boundary. The kernel copies file pages
 * into a destination that is not cache-line aligned at about half the speed (4.5 against 8 GB/s on the benchmark
 * machine), so the data starts on the next page boundary. Unaligned buffers cost a quarter of the serving throughput.
 */
const dataOffset = 4096 - 16
const newBuffer = (): Buffer => Buffer.allocUnsafe(dataOffset + chunkSize).subarray(dataOffset)
/** Free buffers kept for reuse; beyond this they are left to the GC. */
const maxPooled = 4
const pool: Buffer[] = []

/** A read or write failed while sending a file; the response is cut short. */
export class SendFileError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'SendFileError'
  }
}

/**
 * Writes bytes [start, end] of an open file to an HTTP response whose headers are set. Two buffers from a pool
 * alternate: the next chunk is read while the previous one is being written, and a buffer is reused only once the
 * socket has taken it. Allocating a fresh buffer per chunk (what fs.ReadStream does) halves loopback throughput and
 * lets RSS grow with every concurrent transfer; this keeps each transfer at two buffers.
 */
export async function sendFileRange (file: FileHandle, start: number, end: number, res: ServerResponse, signal?: AbortSignal): Promise<void> {
  const buffers = [pool.pop() ?? newBuffer(), pool.pop() ?? newBuffer()]
  let pending: Promise<void> = Promise.resolve()
  let failed = false
  try {
    let position = start
    let i = 0
    while (position <= end) {
      signal?.throwIfAborted()
      if (res.destroyed) throw new SendFileError('client went away')
      const buffer = buffers[i] as Buffer
      i ^= 1
      const { bytesRead } = await file.read(buffer, 0, Math.min(chunkSize, end - position + 1), position)
      if (bytesRead === 0) throw new SendFileError(`file ended at byte ${position}, expected ${end + 1}`)
      await pending
      position += bytesRead
      const chunk = buffer.subarray(0, bytesRead)
      pending = new Promise<void>((resolve, reject) => {
        res.write(chunk, (err) => { if (err != null) reject(new SendFileError('write failed', { cause: err })); else resolve() })
      })
    }
    await pending
    await new Promise<void>((resolve) => { res.end(resolve) })
  } catch (err) {
    failed = true
    // A partially written body must not look complete: drop the connection.
    res.destroy()
    await pending.catch(() => {})
    throw err
  } finally {
    // After destroy() the socket may still hold a reference to a chunk; only return buffers from clean transfers.
    if (!failed) for (const b of buffers) if (pool.length < maxPooled) pool.push(b)
  }
}
