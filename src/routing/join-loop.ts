import { randomBytes } from 'node:crypto'
import { networkInterfaces } from 'node:os'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import { Backoff, pause } from '../util/backoff.ts'
import { multiaddrIp } from './addr.ts'
import type { Bootstrapper, BootstrapPeer } from './bootstrap.ts'
import {
  bootstrapBackoffMaxMs, bootstrapBackoffMinMs, bootstrapDialTimeoutMs, bootstrapTimeoutMs, exploreAfterJoinMs,
  healthCheckIntervalMs, rebootstrapIntervalMs, republishMinIntervalMs,
} from './constants.ts'
import { BootstrapError } from './errors.ts'
import type { DhtService, Services } from './libp2p-node.ts'
import type { ProviderPublisher } from './publisher.ts'

export interface JoinLoopOptions {
  node: Libp2p<Services>
  dht: DhtService
  bootstrapper: Bootstrapper
  publisher: ProviderPublisher
  log: Logger
  /** The router's TCP port: added to address-only bootstrap answers (DNS), and how this node is told from others. */
  listenPort: number
  rebootstrapIntervalMs?: number
  bootstrapBackoffMinMs?: number
  bootstrapBackoffMaxMs?: number
  exploreAfterJoinMs?: number[]
  /** Aborted when the router closes. */
  shutdown: AbortSignal
}

/**
 * Joining and staying in the DHT: bootstrap at start, whenever the routing table is empty (backoff 50 ms → 10 s,
 * forever, errors only logged) and every `rebootstrapIntervalMs`; explore the DHT a few times after joining to fill
 * the routing table; and drive the publisher (every key again after joining and whenever the table has doubled, the
 * keys no peer took on every tick).
 */
export class JoinLoop {
  private readonly options: JoinLoopOptions
  private readonly peerId: string
  /** The last bootstrap round found no candidate other than this node. */
  alone = false
  /** A bootstrap round has completed. */
  bootstrapped = false
  lastBootstrapError?: Error
  private wake?: () => void

  constructor (options: JoinLoopOptions) {
    this.options = options
    this.peerId = options.node.peerId.toString()
  }

  /** Ends the current wait at once (the router is closing). */
  interrupt (): void {
    this.wake?.()
  }

  async run (): Promise<void> {
    const bootstrapBackoff = new Backoff({
      minMs: this.options.bootstrapBackoffMinMs ?? bootstrapBackoffMinMs,
      maxMs: this.options.bootstrapBackoffMaxMs ?? bootstrapBackoffMaxMs,
    })
    const rebootstrapEvery = this.options.rebootstrapIntervalMs ?? rebootstrapIntervalMs
    let lastBootstrap = -Infinity
    let hadPeers = false
    // Table size when every advertised key was last published, and when.
    let publishedAtSize = 0
    let publishedAt = 0
    let joinedAt = 0
    let explored = 0
    while (!this.options.shutdown.aborted) {
      const empty = this.options.dht.routingTable.size === 0
      if (empty || Date.now() - lastBootstrap >= rebootstrapEvery) {
        lastBootstrap = Date.now()
        try {
          await this.bootstrap()
          this.lastBootstrapError = undefined
        } catch (err) {
          if (this.options.shutdown.aborted) break
          this.lastBootstrapError = err as Error
          this.options.log.warn({ err, retryInMs: bootstrapBackoff.delayMs }, 'bootstrap failed, will retry')
        }
      }
      const size = this.options.dht.routingTable.size
      if (size > 0) {
        if (!hadPeers) {
          this.options.log.info({ routingTableSize: size }, 'connected to the DHT')
          joinedAt = Date.now()
          explored = 0
        }
        // A joining node knows few peers at first; a few lookups soon after joining fill its table.
        const exploreDue = (this.options.exploreAfterJoinMs ?? exploreAfterJoinMs)[explored]
        if (exploreDue !== undefined && Date.now() - joinedAt >= exploreDue) {
          explored++
          void this.explore()
        }
        // Records published while the table was much smaller reached peers that may not be the closest ones:
        // publish everything again when the table has doubled (and on (re)connection, for keys advertised offline).
        if (!hadPeers || (size >= 2 * publishedAtSize && Date.now() - publishedAt >= republishMinIntervalMs)) {
          this.options.publisher.republishAll()
          publishedAtSize = size
          publishedAt = Date.now()
        }
        this.options.publisher.tick()
        bootstrapBackoff.reset()
      } else if (hadPeers) {
        this.options.log.warn({}, 'routing table became empty, bootstrapping again')
      }
      hadPeers = size > 0
      await this.sleep(hadPeers ? healthCheckIntervalMs : bootstrapBackoff.next())
    }
  }

  /** Lookups of our own id and of random ids: each peer that answers is added to the routing table. */
  private async explore (): Promise<void> {
    const signal = AbortSignal.any([this.options.shutdown, AbortSignal.timeout(10_000)])
    const targets = [this.options.node.peerId.toMultihash().bytes, randomBytes(32), randomBytes(32)]
    await Promise.all(targets.map(async (target) => {
      try {
        for await (const _ of this.options.dht.getClosestPeers(target, { signal })) { /* drain */ }
      } catch (err) {
        if (!signal.aborted) this.options.log.debug({ err }, 'routing table exploration failed')
      }
    }))
  }

  /** Waits `ms`; close() (through this.wake) ends the wait early. */
  private async sleep (ms: number): Promise<void> {
    const woken = new AbortController()
    this.wake = () => { woken.abort() }
    await pause(ms, woken.signal)
    this.wake = undefined
  }

  /** One bootstrap round. Throws BootstrapError when candidates exist but none could be reached. */
  private async bootstrap (): Promise<void> {
    const signal = AbortSignal.any([this.options.shutdown, AbortSignal.timeout(bootstrapTimeoutMs)])
    const candidates = await this.options.bootstrapper.peers({ signal })
    const targets = this.bootstrapTargets(candidates)
    this.bootstrapped = true
    if (targets.length === 0) {
      if (!this.alone) this.options.log.info({ candidates: candidates.length }, 'no bootstrap peer other than this node: running alone')
      this.alone = true
      return
    }
    const results = await Promise.allSettled(targets.map(async (t) => await this.dialTarget(t, signal)))
    const connected = results.filter((r) => r.status === 'fulfilled' && r.value === 'connected').length
    const selves = results.filter((r) => r.status === 'fulfilled' && r.value === 'self').length
    if (selves === targets.length) {
      this.alone = true
      return
    }
    this.alone = false
    if (connected === 0) {
      const errors = results.flatMap((r) => r.status === 'rejected' ? [r.reason as Error] : [])
      throw new BootstrapError(`could not reach any of ${targets.length - selves} bootstrap peers: ${errors.map((e) => e.message).join('; ')}`,
        { cause: new AggregateError(errors) })
    }
    // Identify runs after the connection is up; kad-dht adds the peer once it has seen the DHT protocol.
    const deadline = Date.now() + 2_000
    while (this.options.dht.routingTable.size === 0 && Date.now() < deadline && !signal.aborted) {
      await pause(20, signal)
    }
    if (this.options.dht.routingTable.size === 0) throw new BootstrapError('connected to bootstrap peers but none speaks the DHT protocol')
    await this.explore()
  }

  /** Candidate peers minus this node, with our port added to address-only entries (DNS answers). */
  private bootstrapTargets (candidates: BootstrapPeer[]): BootstrapPeer[] {
    const ownIps = localIps()
    const targets: BootstrapPeer[] = []
    for (const candidate of candidates) {
      if (candidate.id === this.peerId) continue
      const addrs: string[] = []
      for (const text of candidate.addrs) {
        let ma = multiaddr(text)
        if (ma.getComponents().length === 1) ma = ma.encapsulate(`/tcp/${this.options.listenPort}`)
        const comps = ma.getComponents()
        const ip = multiaddrIp(ma)
        const port = comps[1]?.name === 'tcp' ? Number(comps[1].value) : undefined
        if (ip !== undefined && port === this.options.listenPort && (ownIps.has(ip) || ip === '0.0.0.0' || ip === '::')) continue
        const s = ma.toString()
        if (!addrs.includes(s)) addrs.push(s)
      }
      if (addrs.length > 0) targets.push({ ...(candidate.id !== undefined ? { id: candidate.id } : {}), addrs })
    }
    return targets
  }

  private async dialTarget (target: BootstrapPeer, signal: AbortSignal): Promise<'connected' | 'self'> {
    const dialSignal = (): AbortSignal => AbortSignal.any([signal, AbortSignal.timeout(bootstrapDialTimeoutMs)])
    if (target.id !== undefined) {
      const id = peerIdFromString(target.id)
      await this.options.node.dial(target.addrs.map((a) => multiaddr(a).encapsulate(`/p2p/${target.id ?? ''}`)), { signal: dialSignal() })
      this.options.log.debug({ peer: id.toString() }, 'bootstrap peer connected')
      return 'connected'
    }
    // No peer id: dial the bare address; libp2p learns the remote id from the Noise handshake.
    let lastError: unknown
    for (const addr of target.addrs) {
      try {
        const conn = await this.options.node.dial(multiaddr(addr), { signal: dialSignal() })
        this.options.log.debug({ peer: conn.remotePeer.toString(), addr }, 'bootstrap peer connected')
        return 'connected'
      } catch (err) {
        // libp2p's upgrader: the address was this node's own ("Can not dial self").
        if ((err as Error).name === 'InvalidPeerIdError') return 'self'
        lastError = err
      }
    }
    throw lastError instanceof Error ? lastError : new BootstrapError(`could not dial ${target.addrs.join(', ')}`)
  }
}

/** All IPs of this host's interfaces (to recognise ourselves in bootstrap answers). */
function localIps (): Set<string> {
  const ips = new Set<string>()
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) ips.add(a.address)
  }
  return ips
}
