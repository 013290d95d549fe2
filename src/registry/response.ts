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
 * How a transfer watches its client: a client that takes no bytes for `stallTimeoutMs` while a write waits is cut
 * off (the response is destroyed, as for a hang-up), and after `stalledAfterMs` `onStalled(true)` says it is stalled
 * (the budget stops counting it), `onStalled(false)` once it takes bytes again.
 */
export interface WriteWatch {
  stallTimeoutMs: number
  stalledAfterMs?: number
  onStalled?: (stalled: boolean) => void
  /** Called once when the stall timeout ends the transfer. */
  onTimeout?: () => void
}

/**
 * Default for a client that takes nothing before it counts as stalled: a client slower than 1 Mbit/s would need longer
 * for one 64 KiB chunk; counting a stalled client again is free the moment it takes bytes.
 */
const defaultStalledAfterMs = 500

/**
 * Writes chunks to one response. Each write resolves once the socket has taken the chunk (its buffer may then be
 * reused) and rejects with ClientGoneError once the response has closed; one 'close' listener serves every write, so
 * the cost per chunk is one promise. With a WriteWatch, a client that stops taking bytes is noticed (one timer,
 * refreshed as writes complete, running only while a write waits) and cut off after the stall timeout.
 */
export class ResponseWriter {
  private readonly res: ServerResponse
  private readonly waiting = new Set<(err: Error) => void>()
  private gone = false
  private readonly watch: WriteWatch | undefined
  private timer: NodeJS.Timeout | undefined
  /** performance.now() of the last write the socket took (or of the first write since none was waiting). */
  private progressAt = 0
  private stalled = false
  private timedOut = false
  private readonly onClose = (): void => {
    if (this.res.writableFinished) return
    this.gone = true
    this.stopWatching()
    const message = this.timedOut ? `client took no bytes for ${this.watch?.stallTimeoutMs} ms` : undefined
    for (const reject of this.waiting) reject(new ClientGoneError(message))
    this.waiting.clear()
  }

  constructor (res: ServerResponse, watch?: WriteWatch) {
    this.res = res
    this.watch = watch
    res.once('close', this.onClose)
  }

  async write (chunk: Buffer): Promise<void> {
    await this.writeMany([chunk])
  }

  /**
   * Writes several chunks in one go (corked: one writev); resolves once the socket has taken them all. Writes
   * complete in order, so one callback, on the last, stands for every chunk.
   */
  async writeMany (chunks: readonly Buffer[]): Promise<void> {
    if (this.gone || this.res.destroyed || this.res.writableEnded) throw new ClientGoneError()
    if (this.watch !== undefined && this.waiting.size === 0) this.arm()
    const last = chunks.length - 1
    if (last > 0) this.res.cork()
    for (let k = 0; k < last; k++) this.res.write(chunks[k] as Buffer)
    await new Promise<void>((resolve, reject) => {
      this.waiting.add(reject)
      this.res.write(chunks[last] as Buffer, (err) => {
        this.waiting.delete(reject)
        if (err == null) {
          this.progressed()
          resolve()
        } else {
          reject(new ClientGoneError('write to client failed', { cause: err }))
        }
      })
      if (last > 0) this.res.uncork()
    })
  }

  /** Stops listening; call when done with the response. */
  dispose (): void {
    this.res.off('close', this.onClose)
    this.stopWatching()
  }

  private arm (): void {
    this.progressAt = performance.now()
    if (this.timer === undefined) {
      this.timer = setTimeout(() => { this.check() }, this.watch?.stalledAfterMs ?? defaultStalledAfterMs)
      this.timer.unref()
    } else {
      this.timer.refresh()
    }
  }

  private progressed (): void {
    if (this.watch === undefined) return
    this.progressAt = performance.now()
    if (this.stalled) {
      this.stalled = false
      this.watch.onStalled?.(false)
    }
    this.timer?.refresh()
  }

  private check (): void {
    const watch = this.watch
    if (watch === undefined || this.gone || this.waiting.size === 0) return
    const idle = performance.now() - this.progressAt
    if (idle >= watch.stallTimeoutMs) {
      this.timedOut = true
      watch.onTimeout?.()
      this.res.destroy()
      return
    }
    const stalledAfter = watch.stalledAfterMs ?? defaultStalledAfterMs
    if (!this.stalled && idle >= stalledAfter) {
      this.stalled = true
      watch.onStalled?.(true)
    }
    const next = this.stalled ? watch.stallTimeoutMs - idle : stalledAfter - idle
    this.timer = setTimeout(() => { this.check() }, Math.max(1, Math.min(next, stalledAfter)))
    this.timer.unref()
  }

  private stopWatching (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.stalled) {
      this.stalled = false
      this.watch?.onStalled?.(false)
    }
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
