import type { Libp2p } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import { kBucketSize, lookupCacheTtlMs, lookupTimeoutMs } from './constants.ts'
import { RouterClosedError } from './errors.ts'
import { JoinLoop } from './join-loop.ts'
import { startDhtNode, type DhtService, type Libp2pRouterOptions, type Services } from './libp2p-node.ts'
import { LookupCache } from './lookup-cache.ts'
import { ProviderLookups } from './providers.ts'
import { ProviderPublisher } from './publisher.ts'
import type { LookupOptions, Peer, PeerInfo, Router, RouterIntrospection, RouterOptions, RouterStatus } from './types.ts'

export type { Libp2pRouterOptions } from './libp2p-node.ts'

/**
 * Router on a private libp2p Kademlia DHT (`/spegel/kad/1.0.0`, server mode, k = 20) over TCP + Noise + yamux,
 * wire-compatible with Spegel's DHT. Four parts, each in its own file:
 *
 * - the node (`libp2p-node.ts`): libp2p and kad-dht assembled and started;
 * - lookups (`providers.ts`): the records this node holds, then the peers, asked directly while the cluster is smaller
 *   than k, or a kad-dht query; behind a LookupCache (single-flight + 5 s reuse) unless thorough;
 * - publishing (`publisher.ts`): advertise records self as provider locally at once (so queries reaching this node see
 *   it), then publishes to the k closest peers in the background; kad-dht's reprovider re-publishes exactly the keys
 *   whose local self record exists (withdraw deletes it) when they are older than `reprovideIntervalMs`, and drops
 *   other nodes' records older than `providerTtlMs`;
 * - joining (`join-loop.ts`): bootstrap at start, whenever the routing table is empty and every
 *   `rebootstrapIntervalMs`; candidates without a peer id are dialled by address, and this node itself is skipped.
 *
 * Readiness rule: ready() is true when the DHT routing table has at least one peer, or when the last bootstrap
 * round found no candidate other than this node (a one-node cluster, or the first node of a cluster that has not
 * started yet, which then keeps looking for peers every ≤ 10 s). It is false before the first bootstrap round and
 * while candidates exist but none could be reached (for example a network policy blocking the router port).
 */
export class Libp2pRouter implements Router, RouterIntrospection {
  readonly peerId: string
  private readonly node: Libp2p<Services>
  private readonly dht: DhtService
  private readonly init: Libp2pRouterOptions
  private readonly log: Logger
  private readonly shutdown = new AbortController()
  private readonly lookups: ProviderLookups
  private readonly cache: LookupCache
  private readonly publisher: ProviderPublisher
  private readonly joining: JoinLoop
  private runLoop?: Promise<void>
  private closing?: Promise<void>

  private constructor (node: Libp2p<Services>, dht: DhtService, init: Libp2pRouterOptions, listenPort: number) {
    this.node = node
    this.dht = dht
    this.init = init
    this.peerId = node.peerId.toString()
    this.log = init.logger.child({ component: 'router' })
    const k = init.kBucketSize ?? kBucketSize
    const shutdown = this.shutdown.signal
    this.lookups = new ProviderLookups({ node, dht, log: this.log, allowLoopback: init.allowLoopback ?? false, kBucketSize: k, lookupTimeoutMs: init.lookupTimeoutMs ?? lookupTimeoutMs, shutdown })
    this.cache = new LookupCache({
      query: (key, signal) => this.lookups.query(key, signal),
      ttlMs: init.lookupCacheTtlMs ?? lookupCacheTtlMs,
      queryTimeoutMs: init.lookupTimeoutMs ?? lookupTimeoutMs,
      onError: (key, err) => this.log.warn({ key, err }, 'provider lookup failed'),
    })
    this.publisher = new ProviderPublisher({ node, dht, log: this.log, kBucketSize: k, shutdown })
    this.joining = new JoinLoop({
      node,
      dht,
      bootstrapper: init.bootstrapper,
      publisher: this.publisher,
      log: this.log,
      listenPort,
      shutdown,
      ...(init.rebootstrapIntervalMs !== undefined ? { rebootstrapIntervalMs: init.rebootstrapIntervalMs } : {}),
      ...(init.bootstrapBackoffMinMs !== undefined ? { bootstrapBackoffMinMs: init.bootstrapBackoffMinMs } : {}),
      ...(init.bootstrapBackoffMaxMs !== undefined ? { bootstrapBackoffMaxMs: init.bootstrapBackoffMaxMs } : {}),
      ...(init.exploreAfterJoinMs !== undefined ? { exploreAfterJoinMs: init.exploreAfterJoinMs } : {}),
    })
  }

  /** Creates, starts and bootstraps (in the background) a router. */
  static async create (init: Libp2pRouterOptions): Promise<Libp2pRouter> {
    const { node, dht, port } = await startDhtNode(init)
    const router = new Libp2pRouter(node, dht, init, port)
    try {
      await init.bootstrapper.start?.(() => ({
        id: router.peerId,
        addrs: node.getMultiaddrs().map((ma) => ma.decapsulateCode(421).toString()),
      }))
    } catch (err) {
      await node.stop()
      throw err
    }
    router.log.info({ peerId: router.peerId, addrs: node.getMultiaddrs().map(String) }, 'router started')
    router.runLoop = router.joining.run()
    return router
  }

  ready (): boolean {
    if (this.shutdown.signal.aborted) return false
    return this.dht.routingTable.size > 0 || (this.joining.bootstrapped && this.joining.alone)
  }

  status (): RouterStatus {
    const lastError = this.joining.lastBootstrapError
    return {
      ready: this.ready(),
      routingTableSize: this.dht.routingTable.size,
      alone: this.joining.alone,
      ...(lastError !== undefined ? { lastBootstrapError: lastError.message } : {}),
    }
  }

  multiaddrs (): string[] {
    return this.node.getMultiaddrs().map(String)
  }

  lookup (key: string, options: LookupOptions): AsyncIterable<Peer> {
    if (this.shutdown.signal.aborted) throw new RouterClosedError()
    if (options.thorough === true) return this.lookups.thorough(key, options)
    return this.cache.lookup(key, options)
  }

  async advertise (keys: string[], options?: RouterOptions): Promise<void> {
    if (this.shutdown.signal.aborted) throw new RouterClosedError()
    await this.publisher.advertise(keys, options)
  }

  async withdraw (keys: string[], options?: RouterOptions): Promise<void> {
    if (this.shutdown.signal.aborted) throw new RouterClosedError()
    await this.publisher.withdraw(keys, options)
  }

  peers (): PeerInfo[] {
    const byPeer = new Map<string, string[]>()
    for (const conn of this.node.getConnections()) {
      const id = conn.remotePeer.toString()
      const addrs = byPeer.get(id) ?? []
      const addr = conn.remoteAddr.decapsulateCode(421).toString()
      if (!addrs.includes(addr)) addrs.push(addr)
      byPeer.set(id, addrs)
    }
    return [...byPeer].map(([id, addresses]) => ({ id, addresses }))
  }

  /** Resolves when every queued key has been published (or failed and awaits a retry). For tests and benches. */
  async idle (): Promise<void> {
    await this.publisher.idle()
  }

  async close (): Promise<void> {
    this.closing ??= (async () => {
      this.shutdown.abort()
      this.joining.interrupt()
      this.cache.close()
      await this.runLoop?.catch(() => {})
      // Stop answering as a provider before going away.
      await this.publisher.close()
      try {
        await this.init.bootstrapper.close?.()
      } finally {
        await this.node.stop()
        this.log.info({}, 'router stopped')
      }
    })()
    await this.closing
  }
}
