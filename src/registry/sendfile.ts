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

/** Bodies up to this size are read into one buffer of their own size instead of pooled chunks. */
export const smallBodyBytes = 64 * 1024

/**
 * Writes bytes [start, end] of an open file to an HTTP response whose headers are set. Two pooled buffers alternate:
 * one is read while the other is being written, and a buffer is reused only once the socket has taken it. They start
 * as one chunk each (64 KiB), which is what the registry reserves for a transfer; while the client takes each buffer
 * before the next one is read (it is faster than the reads), the transfer uses large buffers (512 KiB) if the budget
 * (`allowance`) has room, and once it falls behind the reads, small ones again: a thread-pool read costs about as
 * much as copying 64 KiB, so small reads would halve a fast client's throughput, while a slow client keeps the
 * transfer at two small chunks. While the client takes nothing at all (the watch says it is stalled) nothing is read
 * ahead: the transfer holds only what the socket has not taken, until it moves again or the stall timeout ends it. A
 * fresh buffer per read (what fs.ReadStream does) would halve loopback throughput and let RSS grow with every
 * concurrent transfer.
 *
 * Rejects with SendFileError (read failed) or ClientGoneError (response closed, or cut off by the stall timeout);
 * either way the response has been destroyed, so a partial body never looks complete, and the buffers are back in the
 * pool or left to the GC.
 */
export async function sendFileRange (file: FileHandle, start: number, end: number, res: ServerResponse, watch?: WriteWatch, allowance?: ChunkAllowance): Promise<void> {
  const length = end - start + 1
  if (length <= smallBodyBytes) {
    await writeBody(res, watch, async (writer) => {
      const buffer = Buffer.allocUnsafe(length)
      await readFully(file, buffer, start)
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
  /** Reads in a row that found the previous write still waiting. */
  let behind = 0
  /** Why the last write failed (the client went away): the transfer ends with it. */
  let failure: unknown
  try {
    let position = start
    let i = 0
    while (position <= end) {
      const index = i
      const buffer = take(index)
      const { bytesRead } = await file.read(buffer, 0, Math.min(buffer.length, end - position + 1), position)
      if (failure !== undefined) throw failure
      if (bytesRead === 0) throw new SendFileError(`file ended at byte ${position}, expected ${end + 1}`)
      if (!written) {
        // The client is slower than the reads, eight times in a row: large buffers would only hold memory (they go
        // back as they come free). Once is not enough: a fast client's socket is briefly full now and then.
        if (++behind >= 8) large = false
        const stall = new Promise<boolean>((resolve) => { onStall = () => { resolve(true) } })
        const gaveUp = stalled || await Promise.race([pending.then(() => false), stall])
        onStall = undefined
        if (gaveUp) {
          // The client takes nothing: what was read ahead goes back to the pool.
          drop(index)
          await pending
          continue
        }
      } else if (position > start) {
        // The client took the last buffer before this one was read: it is faster than small reads.
        large = true
        behind = 0
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

async function readFully (file: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < buffer.length) {
    const { bytesRead } = await file.read(buffer, done, buffer.length - done, position + done)
    if (bytesRead === 0) throw new SendFileError(`file ended at byte ${position + done}, expected ${position + buffer.length}`)
    done += bytesRead
  }
}
