import type { Metrics } from '../metrics/index.ts'
import type { Peer, Router } from '../routing/types.ts'

/**
 * The providers of one key, filled in the background from a router lookup so fetching can start with the first one.
 * Peers that failed during this request (or that recently served bad bytes) are not handed out again unless the
 * caller explicitly allows reuse, as a resume does.
 */
export class PeerSource {
  private readonly found: Peer[] = []
  private readonly failed = new Set<string>()
  private readonly inUse = new Set<string>()
  private done = false
  private waiters: Array<() => void> = []
  private readonly ac = new AbortController()

  constructor (router: Router, key: string, count: number, options: { signal: AbortSignal, avoid?: (peer: Peer) => boolean, metrics?: Metrics | undefined }) {
    const started = performance.now()
    const signal = AbortSignal.any([options.signal, this.ac.signal])
    void (async () => {
      try {
        for await (const peer of router.lookup(key, { count, signal })) {
          options.metrics?.resolveDuration.observe({ router: 'libp2p' }, (performance.now() - started) / 1000)
          if (options.avoid?.(peer) === true) continue
          this.found.push(peer)
          this.wake()
        }
      } catch {
        // A failed lookup is an exhausted one: the caller answers 404 and containerd goes upstream.
      } finally {
        this.done = true
        this.wake()
      }
    })()
  }

  get exhausted (): boolean {
    return this.done && this.available() === undefined
  }

  /** Number of peers found so far. */
  get size (): number {
    return this.found.length
  }

  /** A peer that has not failed (and is not in use, unless reuse is allowed), without waiting. */
  available (allowReuse = false): Peer | undefined {
    return this.found.find((p) => !this.failed.has(p.id) && (allowReuse || !this.inUse.has(p.id)))
  }

  /** Waits up to timeoutMs for a usable peer; undefined when none came or the lookup ended without one. */
  async next (timeoutMs: number, signal: AbortSignal, allowReuse = false): Promise<Peer | undefined> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const peer = this.available(allowReuse)
      if (peer !== undefined) {
        this.inUse.add(peer.id)
        return peer
      }
      const left = deadline - performance.now()
      if (this.done || left <= 0 || signal.aborted) return undefined
      await this.waitForChange(left, signal)
    }
  }

  /** Resolves when a new peer arrives or the lookup ends (or after timeoutMs). */
  async waitForChange (timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.done) return
    await new Promise<void>((resolve) => {
      const finish = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', finish)
        resolve()
      }
      const timer = setTimeout(finish, Math.max(0, Math.min(timeoutMs, 2 ** 31 - 1)))
      signal?.addEventListener('abort', finish, { once: true })
      this.waiters.push(finish)
    })
  }

  release (peer: Peer): void {
    this.inUse.delete(peer.id)
  }

  /** Releases a peer and moves it behind the others, so the next request prefers someone else. */
  demote (peer: Peer): void {
    this.inUse.delete(peer.id)
    const i = this.found.findIndex((p) => p.id === peer.id)
    if (i !== -1) this.found.push(...this.found.splice(i, 1))
  }

  fail (peer: Peer): void {
    this.inUse.delete(peer.id)
    this.failed.add(peer.id)
  }

  close (): void {
    this.ac.abort()
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }
}

/** Recent time-to-headers of peer requests; hedging waits for the slow tail of these. */
export class LatencyTracker {
  private readonly samples: number[] = []
  private readonly capacity: number
  private readonly initialMs: number

  constructor (capacity = 128, initialMs = 50) {
    this.capacity = capacity
    this.initialMs = initialMs
  }

  record (ms: number): void {
    this.samples.push(ms)
    if (this.samples.length > this.capacity) this.samples.shift()
  }

  /** The q-quantile (0..1) of recent samples, or the initial value while there are too few. */
  quantile (q: number): number {
    if (this.samples.length < 5) return this.initialMs
    const sorted = [...this.samples].sort((a, b) => a - b)
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
  }
}
