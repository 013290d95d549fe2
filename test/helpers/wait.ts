// The one polling helper of the test suite: wait for an observable condition, never for a fixed time.
import { setTimeout as sleep } from 'node:timers/promises'

export class WaitTimeoutError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'WaitTimeoutError'
  }
}

export interface WaitForOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number
  /** Longest pause between two checks (default 50 ms). The first pauses are shorter, see waitFor. */
  intervalMs?: number
  /** What is awaited, for the error message ("registry to answer GET /v2/"). */
  what?: string
  /** Extra context appended to the timeout error, such as a process's output. */
  context?: () => string
  signal?: AbortSignal
}

/** The first pause; it doubles up to `intervalMs`, so a condition that holds soon is seen within a few ms. */
const firstPauseMs = 5

/**
 * Polls `predicate` until it returns a value other than undefined, null or false, and resolves with it.
 * Exceptions thrown by the predicate count as "not yet"; the last one is reported on timeout (a WaitTimeoutError
 * naming `what`, the attempts and `context`). An aborted `signal` rejects at once with its reason.
 */
export async function waitFor<T> (predicate: () => T | Promise<T>, options: WaitForOptions = {}): Promise<Exclude<T, undefined | null | false>> {
  const timeoutMs = options.timeoutMs ?? 10_000
  const intervalMs = options.intervalMs ?? 50
  const started = Date.now()
  let pauseMs = Math.min(firstPauseMs, intervalMs)
  let lastError: unknown
  let attempts = 0
  for (;;) {
    options.signal?.throwIfAborted()
    attempts++
    try {
      const value = await predicate()
      if (value !== undefined && value !== null && value !== false) return value as Exclude<T, undefined | null | false>
      lastError = undefined
    } catch (err) {
      lastError = err
    }
    if (Date.now() - started >= timeoutMs) break
    // An abort ends the wait with the signal's reason (as throwIfAborted does), not a generic AbortError.
    await sleep(pauseMs, undefined, { signal: options.signal }).catch((err: unknown) => {
      options.signal?.throwIfAborted()
      throw err
    })
    pauseMs = Math.min(pauseMs * 2, intervalMs)
  }
  let message = `timed out after ${timeoutMs} ms (${attempts} attempts) waiting for ${options.what ?? 'condition'}`
  if (lastError !== undefined) message += `; last error: ${lastError instanceof Error ? lastError.message : String(lastError)}`
  if (options.context !== undefined) message += `\n${options.context()}`
  throw new WaitTimeoutError(message)
}
