import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Waits `ms`, or less when `signal` aborts; resolves either way (loops check their signal themselves). `ref: false`
 * lets the process exit during the wait.
 */
export async function pause (ms: number, signal?: AbortSignal, options: { ref?: boolean } = {}): Promise<void> {
  await sleep(ms, undefined, { signal, ref: options.ref ?? true }).catch((err: unknown) => {
    // An abort only ends the wait early; it is not a failure here.
    if (!(err instanceof Error && err.name === 'AbortError')) throw err
  })
}

/** Waits `ms` or until `signal` aborts; resolves either way. */
export type PauseFn = (ms: number, signal: AbortSignal | undefined) => Promise<void>

export interface BackoffOptions {
  /** First delay, and the delay after reset(). */
  minMs: number
  /** Delays double up to this. */
  maxMs: number
  /** The wait of wait(); tests inject a fake clock. */
  pause?: PauseFn
}

/** Exponential retry delays: minMs, 2·minMs, 4·minMs, … capped at maxMs; reset() after a success starts over. */
export class Backoff {
  private readonly minMs: number
  private readonly maxMs: number
  private readonly pause: PauseFn
  private current: number

  constructor (options: BackoffOptions) {
    this.minMs = options.minMs
    this.maxMs = options.maxMs
    this.pause = options.pause ?? pause
    this.current = options.minMs
  }

  /** The delay the next wait() or next() takes. */
  get delayMs (): number {
    return this.current
  }

  /** The current delay; the one after it is twice as long (up to maxMs). For loops that wait on their own terms. */
  next (): number {
    const ms = this.current
    this.current = Math.min(ms * 2, this.maxMs)
    return ms
  }

  reset (): void {
    this.current = this.minMs
  }

  /** Waits the current delay and doubles it for next time; ends early, without throwing, when `signal` aborts. */
  async wait (signal?: AbortSignal): Promise<void> {
    const ms = this.next()
    if (signal?.aborted === true) return
    await this.pause(ms, signal)
  }
}
