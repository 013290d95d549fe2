import { readSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import type { ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { abandonBuffer, chunkSize, giveBufferFor, takeBuffer, takeLargeFor, type ChunkAllowance } from './buffers.ts'
import { endResponse, noop, ResponseWriter, type WriteWatch } from './response.ts'

/** A read failed while sending a file, or the file was shorter than expected; the response is cut short. */
export class SendFileError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'SendFileError'
  }
}

export interface FileReadsOptions {
  /** false: every read goes to the thread pool (default true: see FileReads). */
  onEventLoop?: boolean
  /** A read on the event loop slower than this sends reads to the thread pool (default 4 ms). */
  slowReadMs?: number
  /** For how long (default 10 s). */
  threadPoolForMs?: number
  now?: () => number
}

/**
 * How transfers read blob files. A read from the page cache is a memory copy: made at once on the event loop it costs
 * a fraction of a thread-pool read, whose hand-off to a worker thread and back (a futex wake-up and two context
 * switches per read, more on a busy node) made a holder in the 8-node fan-out spend a tenth more CPU and its peers wait
 * a tenth longer (docs/benchmarks.md). What a node serves was almost always written or read moments ago, so it is in
 * the page cache. A read that was slow all the same (it came from disk) sends every transfer's reads to the thread
 * pool for a while: the event loop waits for the disk at most once per `threadPoolForMs`, for one read (at most 512
 * KiB). One instance serves the process (`fileReads`).
 */
export class FileReads {
  private readonly onEventLoop: boolean
  private readonly slowReadMs: number
  private readonly threadPoolForMs: number
  private readonly now: () => number
  private threadPoolUntil = -Infinity

  constructor (options: FileReadsOptions = {}) {
    this.onEventLoop = options.onEventLoop ?? true
    this.slowReadMs = options.slowReadMs ?? 4
    this.threadPoolForMs = options.threadPoolForMs ?? 10_000
    this.now = options.now ?? (() => performance.now())
  }

  /** Reads into buffer[offset, offset + length) from `position`: bytes read, at once or (thread pool) as a promise. */
  read (file: FileHandle, buffer: Buffer, offset: number, length: number, position: number): number | Promise<number> {
    const started = this.now()
    if (!this.onEventLoop || started < this.threadPoolUntil) return file.read(buffer, offset, length, position).then((r) => r.bytesRead)
    const bytes = readSync(file.fd, buffer, offset, length, position)
    const ended = this.now()
    if (ended - started > this.slowReadMs) this.threadPoolUntil = ended + this.threadPoolForMs
    return bytes
  }
}

/** The process's file reads (see FileReads). */
export const fileReads = new FileReads()

/**
 * A transfer whose client takes a buffer within this long of the next one being read keeps up: 512 KiB in 20 ms is
 * 25 MB/s. (Reads on the event loop never overlap a write, so "the write was done before the read" cannot tell.)
 */
const slowClientWaitMs = 20

/** Bodies up to this size are read into one buffer of their own size instead of pooled chunks. */
export const smallBodyBytes = 64 * 1024

/**
 * Writes bytes [start, end] of an open file to an HTTP response whose headers are set. Two pooled buffers alternate:
 * one is read (`reads`, see FileReads) while the other is being written, and a buffer is reused only once the socket
 * has taken it. They start as one chunk each (64 KiB), which is what the registry reserves for a transfer; while the
 * client keeps up (it takes each buffer within slowClientWaitMs of the next being read) the transfer uses large
 * buffers (512 KiB) if the budget (`allowance`) has room, and once it falls behind, small ones again: a socket write
 * and a read cost about as much per call as copying 64 KiB, so small buffers cost a fast client a third more CPU per
 * byte, while a slow client keeps the transfer at two small chunks. While the client takes nothing at all (the watch
 * says it is stalled) nothing is read ahead: the transfer holds only what the socket has not taken, until it moves
 * again or the stall timeout ends it. A fresh buffer per read (what fs.ReadStream does) would halve loopback
 * throughput and let RSS grow with every concurrent transfer.
 *
 * Rejects with SendFileError (read failed) or ClientGoneError (response closed, or cut off by the stall timeout);
 * either way the response has been destroyed, so a partial body never looks complete, and the buffers are back in the
 * pool or left to the GC.
 */
export async function sendFileRange (file: FileHandle, start: number, end: number, res: ServerResponse, watch?: WriteWatch, allowance?: ChunkAllowance, reads: FileReads = fileReads): Promise<void> {
  const length = end - start + 1
  if (length <= smallBodyBytes) {
    await writeBody(res, watch, async (writer) => {
      const buffer = Buffer.allocUnsafe(length)
      await readFully(reads, file, buffer, start)
      await writer.write(buffer)
    })
    return
  }
  let stalled = false
  let onStall: (() => void) | undefined
  const writer = new ResponseWriter(res, watch === undefined
    ? undefined
    : {
        ...watch,
        onStalled: (s) => {
          if (watch.onStalled?.(s) === false) return false
          stalled = s
          if (s) onStall?.()
        },
      })
  const slots: Array<Buffer | undefined> = [undefined, undefined]
  /** Per slot: false while a write of it may still be in the socket (it must then not go back to the pool). */
  const free = [true, true]
  let large = false
  const drop = (index: number): void => {
    const buffer = slots[index]
    if (buffer === undefined) return
    slots[index] = undefined
    giveBufferFor(buffer, allowance)
  }
  /** The slot's buffer: large while `large` and one can be had (room in the budget, a large buffer free), else a chunk. */
  const take = (index: number): Buffer => {
    const buffer = slots[index]
    const isLarge = buffer !== undefined && buffer.length > chunkSize
    if (buffer !== undefined && isLarge === large) return buffer
    if (large) {
      const bigger = takeLargeFor(allowance)
      if (bigger !== undefined) {
        drop(index)
        slots[index] = bigger
        return bigger
      }
      if (buffer !== undefined) return buffer
    } else {
      drop(index)
    }
    const taken = takeBuffer()
    slots[index] = taken
    return taken
  }
  // The write the socket has not confirmed yet. It always has a handler attached: it can reject (client gone) while
  // the loop awaits a file read, and a rejection nobody listens to at that moment ends the process.
  let pending: Promise<void> = Promise.resolve()
  let written = true
  /** Reads in a row after which the previous write took long to complete (see slowClientWaitMs). */
  let behind = 0
  /** Why the last write failed (the client went away): the transfer ends with it. */
  let failure: unknown
  try {
    let position = start
    let i = 0
    while (position <= end) {
      const index = i
      const buffer = take(index)
      const read = reads.read(file, buffer, 0, Math.min(buffer.length, end - position + 1), position)
      const bytesRead = typeof read === 'number' ? read : await read
      if (failure !== undefined) throw failure
      if (bytesRead === 0) throw new SendFileError(`file ended at byte ${position}, expected ${end + 1}`)
      let fast = position > start
      if (!written) {
        const waitFrom = performance.now()
        const stall = new Promise<boolean>((resolve) => { onStall = () => { resolve(true) } })
        const gaveUp = stalled || await Promise.race([pending.then(() => false), stall])
        onStall = undefined
        if (gaveUp) {
          // The client takes nothing: what was read ahead goes back to the pool.
          drop(index)
          await pending
          continue
        }
        fast = performance.now() - waitFrom < slowClientWaitMs
      }
      if (fast) {
        // The client took the last buffer about as soon as this one was read: it keeps up with large reads.
        large = true
        behind = 0
      } else if (position > start && ++behind >= 8) {
        // The client is slower than the reads, eight times in a row: large buffers would only hold memory (they go
        // back as they come free). Once is not enough: a fast client's socket is briefly full now and then.
        large = false
      }
      position += bytesRead
      i ^= 1
      free[index] = false
      written = false
      pending = writer.write(buffer.subarray(0, bytesRead))
      pending.then(() => { free[index] = true; written = true }, (err: unknown) => { free[index] = true; written = true; failure = err })
    }
    await pending
    await endResponse(res)
  } catch (err) {
    // A partially written body must not look complete: drop the connection.
    res.destroy()
    await pending.catch(noop)
    throw err
  } finally {
    writer.dispose()
    // A buffer whose write never completed may still be referenced by the socket: it is left to the GC (its
    // reservation goes with the lease when the response closes).
    for (let k = 0; k < 2; k++) {
      const buffer = slots[k]
      if (free[k] === true) drop(k)
      else if (buffer !== undefined) abandonBuffer(buffer)
    }
  }
}

/**
 * Writes a stream (content a store can only stream, e.g. over containerd's gRPC) to a response whose headers are set,
 * one chunk at a time as the socket takes them, watched like a file transfer; ends the response. On failure the
 * response is destroyed (a partial body must not look complete) and the error rethrown; the stream is always closed.
 */
export async function sendStream (body: Readable, res: ServerResponse, watch?: WriteWatch): Promise<void> {
  try {
    await writeBody(res, watch, async (writer) => {
      for await (const chunk of body as AsyncIterable<Buffer>) await writer.write(chunk)
    })
  } finally {
    body.destroy()
  }
}

/** Writes a body with `write`, then ends the response; on failure destroys it (never a partial body that looks whole). */
async function writeBody (res: ServerResponse, watch: WriteWatch | undefined, write: (writer: ResponseWriter) => Promise<void>): Promise<void> {
  const writer = new ResponseWriter(res, watch)
  try {
    await write(writer)
    await endResponse(res)
  } catch (err) {
    res.destroy()
    throw err
  } finally {
    writer.dispose()
  }
}

async function readFully (reads: FileReads, file: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buffer.length) {
    const bytesRead = await reads.read(file, buffer, done, buffer.length - done, position + done)
    if (bytesRead === 0) throw new SendFileError(`file ended at byte ${position + done}, expected ${position + buffer.length}`)
    done += bytesRead
  }
}
