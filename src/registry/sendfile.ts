import type { FileHandle } from 'node:fs/promises'
import type { ServerResponse } from 'node:http'
import { chunkSize, takeBuffer, giveBuffer } from './buffers.ts'
import { endResponse, noop, ResponseWriter, writeChunk } from './response.ts'

/** A read failed while sending a file, or the file was shorter than expected; the response is cut short. */
export class SendFileError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'SendFileError'
  }
}

/** Bodies up to this size are read into one buffer of their own size instead of two pooled chunks. */
export const smallBodyBytes = 64 * 1024

/**
 * Writes bytes [start, end] of an open file to an HTTP response whose headers are set. Two buffers from the shared
 * pool alternate: the next chunk is read while the previous one is being written, and a buffer is reused only once
 * the socket has taken it. Allocating a fresh buffer per chunk (what fs.ReadStream does) halves loopback throughput
 * and lets RSS grow with every concurrent transfer; this keeps each transfer at two buffers, which is what the
 * registry's transfer budget reserves for it.
 *
 * Rejects with SendFileError (read failed) or ClientGoneError (response closed); either way the response has been
 * destroyed, so a partial body never looks complete, and the buffers are back in the pool or left to the GC.
 */
export async function sendFileRange (file: FileHandle, start: number, end: number, res: ServerResponse, signal?: AbortSignal): Promise<void> {
  const length = end - start + 1
  if (length <= smallBodyBytes) {
    try {
      const buffer = Buffer.allocUnsafe(length)
      await readFully(file, buffer, start)
      await writeChunk(res, buffer)
      await endResponse(res)
    } catch (err) {
      res.destroy()
      throw err
    }
    return
  }
  const buffers = [takeBuffer(), takeBuffer()]
  const writer = new ResponseWriter(res)
  // The write the socket has not confirmed yet. It always has a handler attached: it can reject (client gone) while
  // the loop awaits a file read, and a rejection nobody listens to at that moment ends the process.
  let pending: Promise<void> = Promise.resolve()
  /** Per buffer: false while a write of it may still be in the socket (it must then not go back to the pool). */
  const free = [true, true]
  try {
    let position = start
    let i = 0
    while (position <= end) {
      signal?.throwIfAborted()
      const buffer = buffers[i] as Buffer
      const index = i
      i ^= 1
      const { bytesRead } = await file.read(buffer, 0, Math.min(chunkSize, end - position + 1), position)
      if (bytesRead === 0) throw new SendFileError(`file ended at byte ${position}, expected ${end + 1}`)
      await pending
      position += bytesRead
      free[index] = false
      pending = writer.write(buffer.subarray(0, bytesRead))
      pending.then(() => { free[index] = true }, () => { free[index] = true })
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
    // A buffer whose write never completed may still be referenced by the socket: it is left to the GC.
    for (const [k, b] of buffers.entries()) if (free[k] === true) giveBuffer(b)
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
