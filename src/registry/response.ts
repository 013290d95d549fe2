import type { ServerResponse } from 'node:http'

/**
 * Writing to a response whose client may hang up at any moment. node:http does not promise to call a write's or an
 * end's callback once the socket is gone (a write to a destroyed socket is dropped without one), so every wait here
 * also ends on the response's 'close'. A rejected promise is always one somebody awaits: callers must never leave a
 * write pending while they wait for something else without attaching a handler (see sendfile.ts).
 */

/** The client closed the connection (or it broke) before the response was complete. */
export class ClientGoneError extends Error {
  constructor (message = 'client went away', options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ClientGoneError'
  }
}

/**
 * Writes chunks to one response. Each write resolves once the socket has taken the chunk (its buffer may then be
 * reused) and rejects with ClientGoneError once the response has closed; one 'close' listener serves every write, so
 * the cost per chunk is one promise.
 */
export class ResponseWriter {
  private readonly res: ServerResponse
  private readonly waiting = new Set<(err: Error) => void>()
  private gone = false
  private readonly onClose = (): void => {
    if (this.res.writableFinished) return
    this.gone = true
    for (const reject of this.waiting) reject(new ClientGoneError())
    this.waiting.clear()
  }

  constructor (res: ServerResponse) {
    this.res = res
    res.once('close', this.onClose)
  }

  async write (chunk: Buffer): Promise<void> {
    if (this.gone || this.res.destroyed || this.res.writableEnded) throw new ClientGoneError()
    await new Promise<void>((resolve, reject) => {
      this.waiting.add(reject)
      this.res.write(chunk, (err) => {
        this.waiting.delete(reject)
        if (err == null) resolve()
        else reject(new ClientGoneError('write to client failed', { cause: err }))
      })
    })
  }

  /** Stops listening; call when done with the response. */
  dispose (): void {
    this.res.off('close', this.onClose)
  }
}

/** Resolves once the socket has taken `chunk`; rejects with ClientGoneError if the response closes first. */
export async function writeChunk (res: ServerResponse, chunk: Buffer): Promise<void> {
  const writer = new ResponseWriter(res)
  try {
    await writer.write(chunk)
  } finally {
    writer.dispose()
  }
}

/** Ends the response; resolves when it has finished, rejects with ClientGoneError if it closed before that. */
export async function endResponse (res: ServerResponse): Promise<void> {
  if (res.writableFinished) return
  if (res.destroyed) throw new ClientGoneError()
  await new Promise<void>((resolve, reject) => {
    const onClose = (): void => {
      if (res.writableFinished) resolve()
      else reject(new ClientGoneError())
    }
    res.once('close', onClose)
    // Typed without arguments, but node:http passes an error when the stream was already destroyed.
    res.end((...args: unknown[]) => {
      res.off('close', onClose)
      if (args[0] instanceof Error) reject(new ClientGoneError('ending the response failed', { cause: args[0] }))
      else resolve()
    })
  })
}

/** Swallows a rejection that is handled elsewhere (marks the promise as handled). */
export function noop (): void {}
