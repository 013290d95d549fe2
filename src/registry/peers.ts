import type { Metrics } from '../metrics/index.ts'
import type { Peer, Router } from '../routing/types.ts'

/** Abort reason of a closed source's lookup (shared: a reason-less abort builds a DOMException each time). */
const closed = new Error('peer source closed')

/**
 * The providers of one key, filled in the background from a router lookup so fetching can start with the first one.
 * Peers that failed during this request (or that recently served bad bytes) are not handed out again unless the
 * caller explicitly allows reuse, as a resume does.
 */
export class PeerSource {
  private readonly found: Peer[] = []
  private readonly failed = new Set<string>()
  private readonly inUse = new Set<string>()
  private readonly demoted = new Set<string>()
  private done = false
  private escalated = false
  private waiters: Array<() => void> = []
  private readonly ac = new AbortController()
  private readonly router: Router
  private readonly key: string
  private readonly count: number
  private readonly options: { signal: AbortSignal, avoid?: (peer: Peer) => boolean, metrics?: Metrics | undefined, thorough?: boolean }

  constructor (router: Router, key: string, count: number, options: { signal: AbortSignal, avoid?: (peer: Peer) => boolean, metrics?: Metrics | undefined, thorough?: boolean }) {
    this.router = router
    this.key = key
    this.count = count
    this.options = options
    this.run(options.thorough === true)
  }

  /** Fills `found` from one lookup; a thorough one skips providers already known. */
  private run (thorough: boolean): void {
    const started = performance.now()
    const signal = AbortSignal.any([this.options.signal, this.ac.signal])
    this.done = false
    void (async () => {
      try {
        for await (const peer of this.router.lookup(this.key, { count: this.count, signal, thorough })) {
          if (!thorough) this.options.metrics?.resolveDuration.observe({ router: 'libp2p' }, (performance.now() - started) / 1000)
          if (this.options.avoid?.(peer) === true || this.found.some((p) => p.id === peer.id)) continue
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

  /**
   * Once every peer of the first lookup has failed: look again, thoroughly (the first answer may have come from this
   * node's own records, which can miss a provider whose record has not reached it). Only once per request.
   */
  private escalate (): boolean {
    // No provider at all: the first lookup already asked the network (the shortcut needs a local record).
    if (this.escalated || !this.done || this.found.length === 0 || this.options.signal.aborted || this.ac.signal.aborted) return false
    this.escalated = true
    this.run(true)
    return true
  }

  get exhausted (): boolean {
    return this.done && this.available() === undefined
  }

  /** Number of peers found so far. */
  get size (): number {
    return this.found.length
  }

  /**
   * A peer that has not failed, without waiting: one not in use and not demoted, or with `allowReuse` any of them.
   */
  available (allowReuse = false): Peer | undefined {
    return this.found.find((p) => !this.failed.has(p.id) && (allowReuse || (!this.inUse.has(p.id) && !this.demoted.has(p.id))))
  }

  /**
   * Waits up to timeoutMs for a usable peer; undefined when none came or the lookup ended without one. Peers not tried
   * yet come first; when there are none, a thorough second lookup is made (once); only then, with `allowReuse`, is a
   * peer in use or one whose stream broke handed out again.
   */
  async next (timeoutMs: number, signal: AbortSignal, allowReuse = false): Promise<Peer | undefined> {
    let deadline = performance.now() + timeoutMs
    for (;;) {
      let peer = this.available()
      // Out of fresh peers: the thorough lookup gets the same time to come up with one as the first had.
      if (peer === undefined && this.done && this.escalate()) deadline = performance.now() + timeoutMs
      const left = deadline - performance.now()
      const waiting = !this.done && left > 0 && !signal.aborted
      if (peer === undefined && allowReuse && !waiting) peer = this.available(true)
      if (peer !== undefined) {
        this.inUse.add(peer.id)
        return peer
      }
      if (!waiting) return undefined
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

  /** Releases a peer whose stream broke: it is handed out again only when reuse is allowed and nobody else is left. */
  demote (peer: Peer): void {
    this.inUse.delete(peer.id)
    this.demoted.add(peer.id)
  }

  fail (peer: Peer): void {
    this.inUse.delete(peer.id)
    this.failed.add(peer.id)
  }

  close (): void {
    this.ac.abort(closed)
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
