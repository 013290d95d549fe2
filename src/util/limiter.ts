/**
 * At most `limit` holders at a time; the others wait in arrival order. `acquire` resolves with the function that
 * gives the slot back (calling it again does nothing) and rejects with the signal's reason when the signal aborts
 * while waiting.
 */
export class Limiter {
  readonly limit: number
  private active = 0
  private readonly waiting: Array<() => void> = []

  constructor (limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`)
    this.limit = limit
  }

  /** Slots in use. */
  get running (): number {
    return this.active
  }

  /** Callers waiting for a slot. */
  get queued (): number {
    return this.waiting.length
  }

  async acquire (signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted()
    if (this.active < this.limit) {
      this.active++
      return this.releaser()
    }
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.waiting.indexOf(grant)
        if (at !== -1) this.waiting.splice(at, 1)
        reject(signal?.reason)
      }
      // The slot is handed over by release(): `active` stays counted for the waiter.
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      this.waiting.push(grant)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
    return this.releaser()
  }

  private releaser (): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.waiting.shift()
      if (next !== undefined) next()
      else this.active--
    }
  }
}
