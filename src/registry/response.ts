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
 * off (the response is destroyed, as for a hang-up). `onStalled(true)` says it is stalled (the budget stops counting
 * it) and `onStalled(false)` that it takes bytes again: after `stalledAfterMs` without progress while it has taken
 * less than `stuckBytes` (a socket that never reads is found fast), after `slowStalledAfterMs` once it has (a slow
 * client whose reads come in bursts keeps counting).
 */
export interface WriteWatch {
  stallTimeoutMs: number
  /** Replaces both thresholds (tests). */
  stalledAfterMs?: number
  /** Returns false to have a transfer that just stalled ended at once (see Lease.stalled). */
  onStalled?: (stalled: boolean) => boolean | void
  /** Called once when the stall timeout (or onStalled's refusal) ends the transfer. */
  onTimeout?: () => void
}

/** Default for a client that has taken almost nothing and takes nothing more before it counts as stalled. */
const defaultStalledAfterMs = 500
/** For a client that has taken stuckBytes or more. */
const slowStalledAfterMs = 5_000
const stuckBytes = 1024 * 1024
/** How often a watched transfer's progress is looked at (stall times are this precise). */
const watchTickMs = 100

/**
 * Writes chunks to one response. Each write resolves once the socket has taken the chunk (its buffer may then be
 * reused) and rejects with ClientGoneError once the response has closed; one 'close' listener serves every write, so
 * the cost per chunk is one promise. With a WriteWatch, a client that stops taking bytes is noticed (one interval per
 * transfer compares the bytes taken between its looks while a write waits) and cut off after the stall timeout.
 */
export class ResponseWriter {
  private readonly res: ServerResponse
  private readonly waiting = new Set<(err: Error) => void>()
  private gone = false
  private readonly watch: WriteWatch | undefined
  private timer: NodeJS.Timeout | undefined
  /** performance.now() of the last look that saw progress (or of the first write since none was waiting). */
  private progressAt = 0
  private stalled = false
  private timedOut = false
  /** Bytes the socket has taken, and as many at the watch's last look. */
  private taken = 0
  private seen = 0
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
    if (this.gone || this.res.destroyed || this.res.writableEnded) throw new ClientGoneError()
    if (this.watch !== undefined && this.waiting.size === 0) this.arm()
    await new Promise<void>((resolve, reject) => {
      this.waiting.add(reject)
      this.res.write(chunk, (err) => {
        this.waiting.delete(reject)
        if (err == null) {
          this.taken += chunk.length
          if (this.stalled) this.progressed()
          resolve()
        } else {
          reject(new ClientGoneError('write to client failed', { cause: err }))
        }
      })
    })
  }

  /** Stops listening; call when done with the response. */
  dispose (): void {
    this.res.off('close', this.onClose)
    this.stopWatching()
  }

  /**
   * Starts watching when a write begins to wait after none did. One interval timer per transfer looks at how many
   * writes completed since its last look; a write costs a counter increment, not a clock read and a timer refresh.
   */
  private arm (): void {
    this.progressAt = performance.now()
    this.seen = this.taken
    if (this.timer === undefined) {
      this.timer = setInterval(() => { this.check() }, watchTickMs)
      this.timer.unref()
    }
  }

  private progressed (): void {
    if (this.stalled) {
      this.stalled = false
      this.watch?.onStalled?.(false)
    }
  }

  private check (): void {
    const watch = this.watch
    if (watch === undefined || this.gone) return
    const now = performance.now()
    if (this.waiting.size === 0 || this.taken !== this.seen) {
      this.seen = this.taken
      this.progressAt = now
      return
    }
    const idle = now - this.progressAt
    if (idle >= watch.stallTimeoutMs) {
      this.timedOut = true
      watch.onTimeout?.()
      this.res.destroy()
      return
    }
    if (!this.stalled && idle >= this.stalledAfter()) {
      if (watch.onStalled?.(true) === false) {
        // Stalled transfers hold as much as they may: this one ends rather than counting against those that move.
        this.timedOut = true
        watch.onTimeout?.()
        this.res.destroy()
        return
      }
      this.stalled = true
    }
  }

  private stalledAfter (): number {
    const given = this.watch?.stalledAfterMs
    if (given !== undefined) return given
    return this.taken < stuckBytes ? defaultStalledAfterMs : slowStalledAfterMs
  }

  private stopWatching (): void {
    clearInterval(this.timer)
    this.timer = undefined
    if (this.stalled) {
      this.stalled = false
      this.watch?.onStalled?.(false)
    }
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
