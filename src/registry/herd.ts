import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../log/index.ts'
import type { Metrics } from '../metrics/index.ts'
import type { Peer, Router } from '../routing/types.ts'
import { RegistryError } from './errors.ts'
import type { PeerMirror } from './mirror.ts'
import type { Mirror, MirrorRequest, MirrorResponse } from './types.ts'

/**
 * The DHT key under which a node announces that its containerd is downloading `digest` (or is about to). It is
 * neither a digest nor an image reference, so Go Spegel nodes, which look up only those, never see it.
 */
export function inflightKey (digest: string): string {
  return `inflight:${digest}`
}

/** One blob nobody held when this node's containerd asked, for the debug page. */
export interface HerdEvent {
  digest: string
  /**
   * followed: streamed from a peer's download; won: this node downloaded it; lost: a rival did (streamed from it);
   * fallback: could not follow, downloaded here; held: a peer held it complete after all (found once the first,
   * timed-out lookup had answered), streamed from it.
   */
  outcome: 'followed' | 'won' | 'lost' | 'fallback' | 'held'
  /** The peer streamed from (followed, lost, held). */
  peer?: string
  /** Unix ms. */
  at: number
}

/** Herd events kept for the debug page. */
const maxEvents = 50
/** Digests remembered by downloading(). */
const maxInvolved = 4096

export interface HerdMirrorOptions {
  /** Fetches content held by peers (complete, or in flight with `inflight: true`). */
  mirror: PeerMirror
  router: Router
  logger: Logger
  metrics?: Metrics
  /** How long a node that claimed a blob waits for rival claims before deciding (default 30 ms). */
  electionWindowMs?: number
  /** Longest wait for the claims of others in one lookup (default 1 s; a lookup that ends sooner costs only its time). */
  lookupTimeoutMs?: number
  /** How long a claim stays advertised after this node's containerd was sent to download (default 2 min). */
  claimTtlMs?: number
}

/**
 * Herd protection: when several nodes miss the same blob at about the same time (a rollout), one node's containerd
 * downloads it from the upstream registry and the others stream it from that node while it downloads.
 *
 * A miss of a blob nobody holds goes through three steps. (1) If a peer has claimed the blob, its download is
 * streamed from it (`X-Spegel-Inflight: accept`; the bytes are hashed from byte 0 and the last one is withheld until
 * the digest matches, as for any peer's bytes). (2) Otherwise this node claims it (advertises inflightKey(digest)),
 * waits a short election window and looks at the claims again: the lowest peer id among the claimants wins. (3) The
 * winner answers its containerd 404, so it downloads from the upstream as without a mirror; a loser streams from the
 * winner. Whatever fails (the winner's download never starts within its registry's short wait, breaks, or is
 * wrong) ends in a 404 before any byte or a broken stream, and containerd downloads itself: never wrong bytes, never
 * an endless wait. Waits are bounded so that nodes whose few download slots wait on each other cannot deadlock.
 */
export class HerdMirror implements Mirror {
  private readonly options: Required<Omit<HerdMirrorOptions, 'metrics'>> & Pick<HerdMirrorOptions, 'metrics'>
  private readonly claims = new Map<string, NodeJS.Timeout>()
  private readonly events: HerdEvent[] = []
  /** Digests the herd handled for this node's containerd, and when (see downloading). */
  private readonly involved = new Map<string, number>()

  constructor (options: HerdMirrorOptions) {
    this.options = { electionWindowMs: 30, lookupTimeoutMs: 1000, claimTtlMs: 120_000, ...options }
  }

  async fetch (request: MirrorRequest): Promise<MirrorResponse> {
    try {
      return await this.options.mirror.fetch(request)
    } catch (err) {
      const digest = request.path.digest
      if (digest === undefined || !this.eligible(request, err)) throw err
      return await this.herd(request, digest, err as RegistryError)
    }
  }

  /** The latest blobs nobody held, newest first. */
  recent (): HerdEvent[] {
    return [...this.events].reverse()
  }

  close (): void {
    for (const timer of this.claims.values()) clearTimeout(timer)
    this.claims.clear()
  }

  /** Blob GETs that no peer can serve complete: nobody was found to ask. */
  private eligible (request: MirrorRequest, err: unknown): boolean {
    if (request.method !== 'GET' || request.path.kind !== 'blobs' || request.signal.aborted) return false
    if (!(err instanceof RegistryError) || err.status !== 404) return false
    const detail = err.detail as { attempts?: number } | undefined
    return detail?.attempts === 0
  }

  private async herd (request: MirrorRequest, digest: string, miss: RegistryError): Promise<MirrorResponse> {
    const key = inflightKey(digest)
    // From here on this node's containerd downloads the blob, from a peer or the upstream: peers that still find this
    // node under the blob's claim (it may lose the election, or claim late) can stream that download.
    this.involve(digest)
    const { logger } = this.options
    // (1) Somebody is downloading it already.
    if (!this.claims.has(digest)) {
      const followed = await this.follow(request, key)
      if (followed !== undefined) {
        this.record(digest, 'followed', followed.peer)
        return followed
      }
    }
    // (2) Claim it, give rivals who missed it at the same moment time to claim too, then compare.
    const self = this.options.router.peerId
    this.claim(digest, key)
    await sleep(this.options.electionWindowMs, undefined, { signal: request.signal }).catch(() => {})
    // Two rounds of asks, the second once the first has come back: a rival whose miss came a little later claims a
    // little later, and on a loaded machine the asks themselves are slow. The second round stretches the window in
    // which its claim still counts by the asks' own latency, so both sides see each other (one round in a fixed
    // window let two nodes win the same blob when the asks took longer than the window).
    const rivals = unique([...await this.claimants(key, request.signal), ...await this.claimants(key, request.signal)])
    const winner = [self, ...rivals.map((p) => p.id)].sort()[0]
    if (winner === self) {
      // A holder the first lookup was too slow to name (it had the resolve timeout, a few ms, on a loaded node) has
      // likely been found since: its query ran on in the lookup cache while the herd waited.
      const held = await this.recheck(request, digest)
      if (held !== undefined) return held
      // (3) This node downloads: its containerd goes upstream; peers stream the download from here.
      this.record(digest, 'won')
      logger.debug({ digest, rivals: rivals.length }, 'herd: this node downloads the blob')
      throw miss
    }
    this.unclaim(digest, key)
    const followed = await this.follow(request, key)
    if (followed !== undefined) {
      this.record(digest, 'lost', followed.peer)
      return followed
    }
    const held = await this.recheck(request, digest)
    if (held !== undefined) return held
    this.record(digest, 'fallback')
    logger.debug({ digest, winner }, 'herd: the winner\'s download could not be followed; downloading here')
    throw miss
  }

  /**
   * Whether this node's containerd downloads `digest` for a pull through this mirror, as the herd's winner or as a
   * follower, in the last claim TTL: its download may then be streamed to peers (a follower's too: peers whose lookup
   * still names it chain through it). A download this node's herd never saw (a pull from a registry that is not
   * mirrored) is not.
   */
  downloading (digest: string): boolean {
    if (this.claims.has(digest)) return true
    const at = this.involved.get(digest)
    return at !== undefined && performance.now() - at < this.options.claimTtlMs
  }

  private involve (digest: string): void {
    this.involved.delete(digest)
    this.involved.set(digest, performance.now())
    // Oldest first (insertion order): the bound keeps what any rollout needs.
    if (this.involved.size > maxInvolved) this.involved.delete(this.involved.keys().next().value as string)
  }

  private record (digest: string, outcome: HerdEvent['outcome'], peer?: string): void {
    this.options.metrics?.herdOutcomes.inc({ outcome })
    this.events.push({ digest, outcome, ...(peer !== undefined ? { peer } : {}), at: Date.now() })
    if (this.events.length > maxEvents) this.events.shift()
  }

  /** Streams the blob from a peer that downloads it; undefined when nobody can (before any byte was sent). */
  private async follow (request: MirrorRequest, key: string): Promise<MirrorResponse | undefined> {
    try {
      return await this.options.mirror.fetch(request, { lookupKey: key, inflight: true, resolveTimeoutMs: this.options.lookupTimeoutMs })
    } catch (err) {
      if (err instanceof RegistryError && err.status === 404) return undefined
      throw err
    }
  }

  /**
   * The blob from a peer that holds it complete, asked once more before a download (recorded as `held`); undefined
   * when none can serve it.
   */
  private async recheck (request: MirrorRequest, digest: string): Promise<MirrorResponse | undefined> {
    if (request.signal.aborted) return undefined
    try {
      const held = await this.options.mirror.fetch(request)
      this.record(digest, 'held', held.peer)
      return held
    } catch {
      // Nobody, or the holders failed: the containerd downloads it, as it would have.
      return undefined
    }
  }

  /** The other nodes that claim `key` now (never this one), from a fresh lookup bounded in time. */
  private async claimants (key: string, signal: AbortSignal): Promise<Peer[]> {
    const found: Peer[] = []
    const bounded = AbortSignal.any([signal, AbortSignal.timeout(this.options.lookupTimeoutMs)])
    try {
      for await (const peer of this.options.router.lookup(key, { count: 16, signal: bounded, thorough: true })) found.push(peer)
    } catch {
      // A failed lookup finds no rival: at worst two nodes download.
    }
    return found
  }

  private claim (digest: string, key: string): void {
    clearTimeout(this.claims.get(digest))
    const timer = setTimeout(() => { this.unclaim(digest, key) }, this.options.claimTtlMs)
    timer.unref()
    this.claims.set(digest, timer)
    this.options.router.advertise([key]).catch((err: unknown) => { this.options.logger.debug({ err, key }, 'herd: claim not advertised') })
  }

  private unclaim (digest: string, key: string): void {
    clearTimeout(this.claims.get(digest))
    this.claims.delete(digest)
    this.options.router.withdraw([key]).catch((err: unknown) => { this.options.logger.debug({ err, key }, 'herd: claim not withdrawn') })
  }
}

function unique (peers: Peer[]): Peer[] {
  return [...new Map(peers.map((p) => [p.id, p])).values()]
}
