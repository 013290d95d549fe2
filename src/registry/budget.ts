import type { Metrics } from '../metrics/index.ts'
import { bufferStats } from './buffers.ts'

/**
 * How much memory blob transfers may hold at once, and who gets it. Every transfer that reads a blob through the
 * shared buffers (buffers.ts) reserves what it can hold before its response starts: a local file two chunks, a
 * peer-proxied blob a peer connection's chunks (a few hundred KiB at most). A transfer whose client takes nothing
 * for a while (see ResponseWriter) stops counting until it moves again, so clients that stall never crowd out the
 * transfers that move; the stall timeout ends them. Past the budget a request is not served with more memory but
 * answered at once, which is what keeps the daemon inside its container's memory limit whatever the load:
 * - this node's containerd comes first: a quarter of the budget is kept for it, and when even that is taken it waits
 *   in line (ahead of peers) up to 2 s, then gets 404 and pulls from the upstream registry;
 * - a peer waits in line up to 1 s (its mirror hedges to another holder meanwhile), then gets 429 with Retry-After
 *   and asks another holder straight away.
 */

/** Who asks: another node's mirror, or this node's own containerd. */
export type Requester = 'peer' | 'node'
/** What the transfer reads from: a file of this node, or a peer. */
export type TransferSource = 'local' | 'peer'

export interface TransferBudgetOptions {
  /** Bytes of transfer buffers that may be reserved at once. */
  bytes: number
  /** Longest wait of this node's containerd for room before it is told 404 (default 2 s). */
  queueTimeoutMs?: number
  /** Longest wait of a peer for room before it is told 429 (default 1 s). */
  peerQueueTimeoutMs?: number
  /** Requests allowed to wait at once; beyond, they are answered at once (default 128). */
  maxQueued?: number
  metrics?: Metrics
}

/** Memory reserved for one transfer; release() is idempotent. */
export interface Lease {
  /** Bytes reserved now (what was admitted, plus what grow() added). */
  readonly bytes: number
  /**
   * true: the transfer is stalled (its client takes nothing), so it stops counting; false: it moves again. Returns
   * false when the stalled transfers already pin as much as the whole budget: the caller must then end this one (it
   * would otherwise keep counting against the transfers that move).
   */
  stalled: (stalled: boolean) => boolean
  /** Reserves `bytes` more while half the budget is free and nobody waits for it (a fast transfer reading ahead). */
  grow: (bytes: number) => boolean
  /** Gives back `bytes` taken with grow(). */
  shrink: (bytes: number) => void
  release: () => void
}

interface Waiter {
  bytes: number
  /** What `reserved` may reach with this waiter in (see limitFor). */
  limit: number
  requester: Requester
  grant: (lease: Lease) => void
}

export class TransferBudget {
  readonly capacity: number
  private readonly queueTimeoutMs: number
  private readonly peerQueueTimeoutMs: number
  private readonly maxQueued: number
  private readonly metrics: Metrics | undefined
  private reserved = 0
  private stalledBytes = 0
  private readonly queue: Waiter[] = []

  constructor (options: TransferBudgetOptions) {
    this.capacity = Math.max(1, Math.floor(options.bytes))
    this.queueTimeoutMs = options.queueTimeoutMs ?? 2_000
    this.peerQueueTimeoutMs = options.peerQueueTimeoutMs ?? 1_000
    this.maxQueued = options.maxQueued ?? 128
    this.metrics = options.metrics
    this.metrics?.transferBudget.set(this.capacity)
    this.metrics?.registerTransferGauges(() => ({ reserved: this.reserved, stalled: this.stalledBytes, queued: this.queue.length, ...bufferStats() }))
  }

  /** Bytes reserved now. */
  get used (): number {
    return this.reserved
  }

  /** Requests waiting for room now. */
  get queued (): number {
    return this.queue.length
  }

  /** Bytes of stalled transfers (not counted in `used`). */
  get stalled (): number {
    return this.stalledBytes
  }

  /**
   * Reserves `bytes` for a transfer. Peers may use three quarters of the budget: the rest is this node's
   * containerd's. When there is no room the request waits in line, this node's containerd ahead of every peer, up to
   * the queue timeout (a peer's is shorter: meanwhile it hedges to another holder, and past it gets 429). A request
   * larger than the whole budget is clamped to it, so it can always run alone. Undefined when no room came in time,
   * or `signal` aborted while waiting.
   */
  async admit (bytes: number, requester: Requester, source: TransferSource, signal?: AbortSignal): Promise<Lease | undefined> {
    const want = Math.min(Math.max(0, Math.ceil(bytes)), this.capacity)
    const limit = this.limitFor(requester, want)
    if (this.queue.length === 0 && this.reserved + want <= limit) return this.grant(want)
    const timeoutMs = requester === 'peer' ? this.peerQueueTimeoutMs : this.queueTimeoutMs
    if (this.queue.length >= this.maxQueued || timeoutMs <= 0 || signal?.aborted === true) {
      this.reject(requester, source, 'full')
      return undefined
    }
    const started = performance.now()
    let cancelled = false
    const lease = await new Promise<Lease | undefined>((resolve) => {
      const waiter: Waiter = {
        bytes: want,
        limit,
        requester,
        grant: (l) => { done(); resolve(l) },
      }
      const timer = setTimeout(() => { done(); resolve(undefined) }, timeoutMs)
      const onAbort = (): void => { cancelled = true; done(); resolve(undefined) }
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        const i = this.queue.indexOf(waiter)
        if (i !== -1) this.queue.splice(i, 1)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      // This node's containerd goes ahead of every waiting peer.
      const at = requester === 'node' ? this.queue.findIndex((w) => w.requester === 'peer') : -1
      if (at === -1) this.queue.push(waiter)
      else this.queue.splice(at, 0, waiter)
    })
    this.metrics?.transferQueueSeconds.observe({ outcome: lease !== undefined ? 'admitted' : 'timeout' }, (performance.now() - started) / 1000)
    if (lease === undefined) {
      this.reject(requester, source, cancelled ? 'cancelled' : 'timeout')
      // Leaving the line may let the next one in.
      this.drain()
    }
    return lease
  }

  private grant (admitted: number): Lease {
    this.reserved += admitted
    let bytes = admitted
    let released = false
    let stalled = false
    return {
      get bytes () { return bytes },
      stalled: (yes) => {
        if (released || yes === stalled) return true
        // Stalled transfers are let off the budget up to as much again; beyond, they are ended rather than counted,
        // so any number of sockets that never read cannot crowd out the transfers that move, and the memory they pin
        // stays bounded.
        if (yes && this.stalledBytes + bytes > this.capacity) return false
        stalled = yes
        // A transfer that moves again counts again at once, even past the budget: it holds its chunks already.
        this.reserved += yes ? -bytes : bytes
        this.stalledBytes += yes ? bytes : -bytes
        if (yes) this.drain()
        return true
      },
      grow: (more) => {
        // Growth uses only the first half of the budget: the rest stays for admitting new transfers.
        if (released || stalled || this.queue.length > 0 || this.reserved + more > this.capacity / 2) return false
        this.reserved += more
        bytes += more
        return true
      },
      shrink: (less) => {
        if (released) return
        const n = Math.min(less, bytes - admitted)
        bytes -= n
        if (stalled) this.stalledBytes -= n
        else this.reserved -= n
        this.drain()
      },
      release: () => {
        if (released) return
        released = true
        if (stalled) this.stalledBytes -= bytes
        else this.reserved -= bytes
        this.drain()
      },
    }
  }

  private limitFor (requester: Requester, want: number): number {
    return requester === 'peer' ? Math.max(want, Math.floor(this.capacity * 3 / 4)) : this.capacity
  }

  /** Admits waiters in line order while the first one fits. */
  private drain (): void {
    for (;;) {
      const next = this.queue[0]
      if (next === undefined || this.reserved + next.bytes > next.limit) return
      this.queue.shift()
      next.grant(this.grant(next.bytes))
    }
  }

  private reject (requester: Requester, source: TransferSource, reason: 'full' | 'timeout' | 'cancelled'): void {
    if (reason === 'cancelled') return
    this.metrics?.transferRejections.inc({ requester, source, reason })
  }
}

const MiB = 1024 * 1024

/**
 * The default budget for a process under `limitBytes` (the container's memory limit; undefined or 0: none found).
 * About 96 MiB of a daemon's resident memory under load does not depend on the budget: the Node binary's code pages
 * (about 55 MiB, which count against the container's limit), the JavaScript heap and what thousands of connections
 * leave behind until the next collection. Half of what is left above that goes to transfers, the rest is headroom
 * (also for stalled transfers, which hold one or two chunks each until the stall timeout ends them). Under the
 * chart's 128 Mi that is 16 MiB: 128 local or 64 proxied transfers at once.
 */
export function defaultTransferBudget (limitBytes: number | undefined): number {
  if (limitBytes === undefined || limitBytes <= 0 || !Number.isFinite(limitBytes) || limitBytes >= 2 ** 50) return 256 * MiB
  return Math.max(8 * MiB, Math.floor((limitBytes - 96 * MiB) / 2))
}
