import { randomBytes } from 'node:crypto'
import { networkInterfaces } from 'node:os'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Identify } from '@libp2p/identify'
import { kadDHT } from '@libp2p/kad-dht'
import type { KadDHT, QueryEvent } from '@libp2p/kad-dht'
import { peerIdFromMultihash, peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import type { Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import type { Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import type { ComponentLogger, Libp2p, Logger as Libp2pLogger, PeerId, PeerInfo as Libp2pPeerInfo, PrivateKey } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import type { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { isShareableIp, multiaddrIp, routerListenAddrs, uniqueIps } from './addr.ts'
import { parseHostPort } from '../util/addr.ts'
import { Backoff, pause } from '../util/backoff.ts'
import { Limiter } from '../util/limiter.ts'
import type { Bootstrapper, BootstrapPeer } from './bootstrap.ts'
import {
  bootstrapBackoffMaxMs, bootstrapBackoffMinMs, bootstrapDialTimeoutMs, bootstrapTimeoutMs, connectionPingIntervalMs,
  defaultRouterAddr, dhtProtocol, exploreAfterJoinMs, healthCheckIntervalMs, kBucketSize, lookupCacheTtlMs,
  lookupTimeoutMs, provideConcurrency, provideTimeoutMs, providerTtlMs, queryAlpha, queryConcurrency, rebootstrapIntervalMs,
  reprovideIntervalMs, republishMinIntervalMs, dhtMaxInboundStreams, directBatchKeys,
} from './constants.ts'
import { BootstrapError, RouterClosedError } from './errors.ts'
import { loadIdentity } from './identity.ts'
import { decodeProviders, encodeAddProvider, encodeGetProviders, FrameReader, KadMessageError, type WirePeer } from './kad-message.ts'
import { keyToCid } from './keys.ts'
import { formatSwarmKey } from './psk.ts'
import { LookupCache } from './lookup-cache.ts'
import type { LookupOptions, Peer, PeerInfo, Router, RouterIntrospection, RouterOptions, RouterStatus } from './types.ts'

export interface Libp2pRouterOptions {
  bootstrapper: Bootstrapper
  logger: Logger
  /** `--router-addr` (host:port; empty host ⇒ all interfaces, IPv4 and IPv6). Default `:5001`. */
  listenAddr?: string
  /** `--data-dir`: holds `private.key` so the peer id survives restarts. Unset ⇒ new identity per start. */
  dataDir?: string
  /**
   * The pre-shared key of a private network (`--router-psk-file`, parsed by parseSwarmKey): every connection is
   * encrypted with it before Noise, so only nodes with the same key can connect (go-libp2p's private networks alike).
   */
  psk?: Uint8Array
  /** Identity to use instead of `dataDir` (tests). */
  privateKey?: PrivateKey
  /** Accept and announce loopback addresses. Only for tests: in production other nodes cannot use them. */
  allowLoopback?: boolean
  /** How often our records are re-published. Default 15 min. */
  reprovideIntervalMs?: number
  /** How long provider records stay valid on other nodes. Default 19 min; must exceed reprovideIntervalMs. */
  providerTtlMs?: number
  lookupCacheTtlMs?: number
  lookupTimeoutMs?: number
  rebootstrapIntervalMs?: number
  bootstrapBackoffMinMs?: number
  bootstrapBackoffMaxMs?: number
  kBucketSize?: number
  /** Offsets after joining at which the DHT is explored to fill the routing table. Default 2 s, 10 s, 60 s. */
  exploreAfterJoinMs?: number[]
}

const silentLog: Libp2pLogger = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
  newScope: (): Libp2pLogger => silentLog,
})
const silentLogger: ComponentLogger = { forComponent: () => silentLog }

/** The parts of the kad-dht service we use beyond its exported interface (checked at start). */
interface DhtService extends KadDHT {
  routingTable: { size: number, kb: { toIterable: () => Iterable<{ peerId: PeerId }> } }
  providers: {
    addProvider(cid: CID, provider: PeerId): Promise<void>
    getProviders(cid: CID, options?: { signal?: AbortSignal }): Promise<PeerId[]>
  }
}

// A type alias, not an interface: libp2p's ServiceMap needs an index signature.
type Services = {
  identify: Identify
  ping: Ping
  dht: KadDHT
}

/**
 * Router on a private libp2p Kademlia DHT (`/spegel/kad/1.0.0`, server mode, k = 20) over TCP + Noise + yamux,
 * wire-compatible with Spegel's DHT.
 *
 * - advertise: records self as provider locally at once (so queries reaching this node see it), then publishes to
 *   the k closest peers in the background; while the routing table is empty publishing waits, and when it fills up
 *   every advertised key is published. kad-dht's reprovider re-publishes exactly the keys whose local self record
 *   exists (the advertised set: withdraw deletes the record) when they are older than `reprovideIntervalMs`, and
 *   drops other nodes' records older than `providerTtlMs`.
 * - lookup: kad-dht findProviders, streamed, self skipped, addresses turned into unique IPs, behind a LookupCache
 *   (single-flight + 5 s reuse).
 * - bootstrap: at start, whenever the routing table is empty (backoff 50 ms → 10 s, forever, errors only logged),
 *   and every `rebootstrapIntervalMs`. Candidates without a peer id are dialled by address; the id comes from the
 *   Noise handshake. Candidates that are this node (same id, or one of our IPs on our port) are skipped.
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
  private readonly allowLoopback: boolean
  private readonly listenPort: number
  private readonly cache: LookupCache
  /** DHT provider queries in flight (see queryConcurrency). */
  private readonly queries = new Limiter(queryConcurrency)
  private readonly shutdown = new AbortController()
  private readonly advertised = new Map<string, CID>()
  /** Keys to publish to the network once peers exist. */
  private readonly pending = new Set<string>()
  private publishing?: Promise<void>
  private alone = false
  private bootstrapped = false
  private lastBootstrapError?: Error
  private runLoop?: Promise<void>
  private wake?: () => void
  private closing?: Promise<void>

  private constructor (node: Libp2p<Services>, init: Libp2pRouterOptions, listenPort: number) {
    this.node = node
    this.init = init
    this.dht = node.services.dht as DhtService
    this.peerId = node.peerId.toString()
    this.log = init.logger.child({ component: 'router' })
    this.allowLoopback = init.allowLoopback ?? false
    this.listenPort = listenPort
    this.cache = new LookupCache({
      query: (key, signal) => this.queryProviders(key, signal),
      ttlMs: init.lookupCacheTtlMs ?? lookupCacheTtlMs,
      queryTimeoutMs: init.lookupTimeoutMs ?? lookupTimeoutMs,
      onError: (key, err) => this.log.warn({ key, err }, 'provider lookup failed'),
    })
  }

  /** Creates, starts and bootstraps (in the background) a router. */
  static async create (init: Libp2pRouterOptions): Promise<Libp2pRouter> {
    const allowLoopback = init.allowLoopback ?? false
    const listen = routerListenAddrs(init.listenAddr ?? defaultRouterAddr)
    const { port } = parseHostPort(init.listenAddr ?? defaultRouterAddr)
    const ttl = init.providerTtlMs ?? providerTtlMs
    const reprovide = init.reprovideIntervalMs ?? reprovideIntervalMs
    if (!(ttl > reprovide)) throw new RangeError(`provider TTL (${ttl} ms) must exceed the reprovide interval (${reprovide} ms)`)
    const privateKey = init.privateKey ?? await loadIdentity(init.dataDir, init.logger)
    const keepShareable = (addrs: Multiaddr[]): Multiaddr[] => addrs.filter((ma) => {
      const ip = multiaddrIp(ma)
      return ip !== undefined && isShareableIp(ip, allowLoopback)
    })
    const node = await createLibp2p<Services>({
      // libp2p's own debug logging costs CPU on every stream even when off (it creates a logger and checks the
      // terminal each time); it is kept only when asked for with DEBUG=libp2p:*.
      ...(/libp2p/.test(process.env.DEBUG ?? '') ? {} : { logger: silentLogger }),
      privateKey,
      addresses: {
        listen,
        // Public IPs would otherwise stay unannounced until AutoNAT confirms them; a LAN DHT has no AutoNAT.
        appendAnnounce: port === 0 ? [] : publicInterfaceAddrs(listen, port),
        announceFilter: keepShareable,
      },
      // Every connection is pinged on a new stream this often (libp2p's default is 10 s). Dead peers are also found by
      // yamux keep-alives and failed queries; in a large cluster the pings were most of an idle node's CPU.
      connectionMonitor: { pingInterval: connectionPingIntervalMs },
      transports: [tcp()],
      ...(init.psk !== undefined ? { connectionProtector: preSharedKey({ psk: formatSwarmKey(init.psk) }) } : {}),
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionManager: {
        // Cluster peers are few and trusted; the defaults (5 inbound/s per host) throttle a burst of joins.
        inboundConnectionThreshold: 100,
        maxIncomingPendingConnections: 100,
        ...(allowLoopback ? { allow: ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128'] } : {}),
      },
      services: {
        identify: identify(),
        ping: ping(),
        dht: kadDHT({
          protocol: dhtProtocol,
          clientMode: false,
          kBucketSize: init.kBucketSize ?? kBucketSize,
          // Go's kad-dht (Spegel) asks 3 peers at a time; js-libp2p's default asks 10 on each of 10 disjoint paths, a
          // burst of up to 20 streams per lookup that mostly slows the answer it waits for. The paths stay as many as
          // alpha (3): one path can end before all its starting peers are queued (seen under load), others cover it.
          alpha: queryAlpha,
          // LAN peers: keep private addresses (the default mapper drops them), drop unusable ones.
          peerInfoMapper: (info: Libp2pPeerInfo): Libp2pPeerInfo => ({ ...info, multiaddrs: keepShareable(info.multiaddrs) }),
          // Never block a query waiting for peers: an empty table means "nobody to ask", answered at once.
          allowQueryWithZeroPeers: true,
          maxInboundStreams: dhtMaxInboundStreams,
          reprovide: {
            validity: ttl,
            threshold: ttl - reprovide,
            // Check often enough that a record is re-published before it expires elsewhere.
            interval: Math.max(50, Math.min(60_000, Math.floor((ttl - reprovide) / 2))),
          },
        }),
      },
    })
    const dht = node.services.dht as Partial<DhtService>
    if (typeof dht.routingTable?.size !== 'number' || typeof dht.routingTable.kb?.toIterable !== 'function' || typeof dht.providers?.addProvider !== 'function' || typeof dht.providers.getProviders !== 'function') {
      await node.stop()
      throw new Error('unsupported @libp2p/kad-dht version: routingTable/providers not found')
    }
    const boundPort = actualPort(node) ?? port
    const router = new Libp2pRouter(node, init, boundPort)
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
    router.runLoop = router.run()
    return router
  }

  ready (): boolean {
    if (this.shutdown.signal.aborted) return false
    return this.routingTableSize() > 0 || (this.bootstrapped && this.alone)
  }

  status (): RouterStatus {
    return {
      ready: this.ready(),
      routingTableSize: this.routingTableSize(),
      alone: this.alone,
      ...(this.lastBootstrapError !== undefined ? { lastBootstrapError: this.lastBootstrapError.message } : {}),
    }
  }

  multiaddrs (): string[] {
    return this.node.getMultiaddrs().map(String)
  }

  lookup (key: string, options: LookupOptions): AsyncIterable<Peer> {
    if (this.shutdown.signal.aborted) throw new RouterClosedError()
    if (options.thorough === true) return this.uncachedLookup(key, options)
    return this.cache.lookup(key, options)
  }

  private async * uncachedLookup (key: string, options: LookupOptions): AsyncGenerator<Peer> {
    if (options.count < 1) return
    const signals = [this.shutdown.signal, AbortSignal.timeout(this.init.lookupTimeoutMs ?? lookupTimeoutMs)]
    if (options.signal !== undefined) signals.push(options.signal)
    let yielded = 0
    try {
      for await (const peer of this.queryProviders(key, AbortSignal.any(signals), false)) {
        yield peer
        if (++yielded >= options.count) return
      }
    } catch (err) {
      // Like a cached lookup: an ended or failed query is an exhausted one.
      if (options.signal?.aborted !== true && !this.shutdown.signal.aborted) this.log.debug({ key, err }, 'thorough provider lookup failed')
    }
  }

  async advertise (keys: string[], options?: RouterOptions): Promise<void> {
    if (this.shutdown.signal.aborted) throw new RouterClosedError()
    const self = this.node.peerId
    for (const key of keys) {
      options?.signal?.throwIfAborted()
      const cid = keyToCid(key)
      this.advertised.set(key, cid)
      await this.dht.providers.addProvider(cid, self)
      this.pending.add(key)
    }
    this.publish()
  }

  async withdraw (keys: string[], options?: RouterOptions): Promise<void> {
    if (this.shutdown.signal.aborted) throw new RouterClosedError()
    for (const key of keys) {
      options?.signal?.throwIfAborted()
      this.advertised.delete(key)
      this.pending.delete(key)
      // Deleting our self record stops both answering for it and kad-dht's re-publishing of it.
      await this.dht.cancelReprovide(keyToCid(key))
    }
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
    while (this.publishing !== undefined) await this.publishing
  }

  async close (): Promise<void> {
    this.closing ??= (async () => {
      this.shutdown.abort()
      this.wake?.()
      this.cache.close()
      await this.runLoop?.catch(() => {})
      await this.publishing?.catch(() => {})
      // Stop answering as a provider before going away (best effort; the node stops right after).
      for (const cid of this.advertised.values()) await this.dht.cancelReprovide(cid).catch(() => {})
      this.advertised.clear()
      try {
        await this.init.bootstrapper.close?.()
      } finally {
        await this.node.stop()
        this.log.info({}, 'router stopped')
      }
    })()
    await this.closing
  }

  private routingTableSize (): number {
    return this.dht.routingTable.size
  }

  /**
   * Providers of a key: first the records this node stores, then a DHT query. While the routing table holds fewer
   * than k peers the whole cluster is within every publisher's k closest, so every record reaches this node and a
   * local answer is complete: the query, which costs every node CPU while the caller waits for its first bytes, is
   * skipped (unless `localFirst` is false: a thorough lookup after those providers failed, or for a record that has
   * not reached this node yet). Larger clusters, and keys with no local record, always query the DHT.
   */
  private async * queryProviders (key: string, signal: AbortSignal, localFirst = true): AsyncGenerator<Peer> {
    const self = this.node.peerId
    const cid = keyToCid(key)
    const seen = new Set<string>([self.toString()])
    let local = 0
    // Shuffled: the record store lists providers in the same order on every node, which would send every node's
    // first request for a blob to the same holder (Spegel #670) while the others idle.
    for (const id of shuffle(await this.dht.providers.getProviders(cid, { signal }))) {
      if (seen.has(id.toString())) continue
      seen.add(id.toString())
      const peer = await this.peerFor(id, [])
      if (peer === undefined) continue
      local++
      yield peer
    }
    const small = this.routingTableSize() < (this.init.kBucketSize ?? kBucketSize)
    if (localFirst && local > 0 && small) return
    const release = await this.queries.acquire(signal)
    try {
      if (small) {
        for await (const provider of this.askPeers(cid, signal)) {
          if (seen.has(provider.id.toString())) continue
          const peer = await this.peerFor(provider.id, provider.multiaddrs)
          if (peer === undefined) continue
          seen.add(provider.id.toString())
          yield peer
        }
        return
      }
      for await (const event of this.dht.findProviders(cid, { signal }) as AsyncIterable<QueryEvent>) {
        if (event.name !== 'PROVIDER') continue
        for (const provider of event.providers) {
          if (seen.has(provider.id.toString())) continue
          const peer = await this.peerFor(provider.id, provider.multiaddrs)
          if (peer === undefined) continue
          seen.add(provider.id.toString())
          yield peer
        }
      }
    } finally {
      release()
    }
  }

  /**
   * The providers of `cid` that the peers in the routing table know, from one GET_PROVIDERS to each, all at once,
   * yielded as the answers come; ends when every peer has answered or failed. Only while the table holds fewer than k
   * peers: they are then every peer a DHT query would reach, and their answers are all it would find. The query, by
   * contrast, merges the closer peers of every answer (each peer's record, seven times over in an eight-node cluster)
   * into the peer store and walks its paths until they end: most of a node's CPU while a cluster pulls new images.
   */
  private async * askPeers (cid: CID, signal: AbortSignal): AsyncGenerator<{ id: PeerId, multiaddrs: Multiaddr[] }> {
    const request = encodeGetProviders(cid.multihash.bytes)
    const peers = [...this.dht.routingTable.kb.toIterable()].map((p) => p.peerId)
    const answers = new Map(peers.map((peer, i) => [i, this.askPeer(peer, request, signal).then((providers) => ({ i, providers }), (err: unknown) => {
      if (!signal.aborted && !this.shutdown.signal.aborted) this.log.debug({ peer: peer.toString(), err }, 'provider request failed')
      return { i, providers: [] as WirePeer[] }
    })]))
    while (answers.size > 0) {
      const { i, providers } = await Promise.race(answers.values())
      answers.delete(i)
      for (const provider of providers) {
        let id: PeerId
        try {
          id = peerIdFromMultihash(Digest.decode(provider.id))
        } catch {
          continue
        }
        const multiaddrs: Multiaddr[] = []
        for (const bytes of provider.multiaddrs) {
          try {
            multiaddrs.push(multiaddr(bytes))
          } catch {
            // An address this node cannot read is one it cannot dial.
          }
        }
        yield { id, multiaddrs }
      }
    }
  }

  /** One GET_PROVIDERS request on a stream of its own, and the providers of its answer. */
  private async askPeer (peer: PeerId, request: Uint8Array, signal: AbortSignal): Promise<WirePeer[]> {
    const stream = await this.node.dialProtocol(peer, dhtProtocol, { signal })
    // Reading waits for the stream's messages; an abort ends it (and the read with it).
    const onAbort = (): void => { stream.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      if (!stream.send(request)) await stream.onDrain({ signal })
      const frames = new FrameReader()
      for await (const chunk of stream) {
        const message = frames.push(chunk.subarray())
        if (message === undefined) continue
        const providers = decodeProviders(message)
        // Not awaited: a graceful close waits for the peer to end its side, and the answer is all this needs.
        stream.close({ signal }).catch((err: unknown) => { stream.abort(err instanceof Error ? err : new Error('close failed')) })
        return providers
      }
      signal.throwIfAborted()
      throw new KadMessageError('the peer closed the stream without an answer')
    } catch (err) {
      stream.abort(err as Error)
      throw err
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** A provider with its usable addresses (from the record, else the peer store); undefined when it has none. */
  private async peerFor (id: PeerId, multiaddrs: Multiaddr[]): Promise<Peer | undefined> {
    let addresses = uniqueIps(multiaddrs, this.allowLoopback)
    if (addresses.length === 0) {
      const known = await this.node.peerStore.get(id).catch(() => undefined)
      addresses = uniqueIps(known?.addresses.map((a) => a.multiaddr) ?? [], this.allowLoopback)
    }
    return addresses.length === 0 ? undefined : { id: id.toString(), addresses }
  }

  /** Starts publishing pending keys unless already running or there is nobody to publish to. */
  private publish (): void {
    if (this.publishing !== undefined || this.pending.size === 0 || this.shutdown.signal.aborted) return
    if (this.routingTableSize() === 0) return
    this.publishing = (async () => {
      try {
        while (this.pending.size > 0 && !this.shutdown.signal.aborted && this.routingTableSize() > 0) {
          if (this.routingTableSize() < (this.init.kBucketSize ?? kBucketSize)) {
            const batch = [...this.pending].slice(0, directBatchKeys)
            for (const key of batch) this.pending.delete(key)
            if (!await this.publishDirect(batch)) this.retry.push(...batch)
            continue
          }
          const batch = [...this.pending].slice(0, provideConcurrency)
          for (const key of batch) this.pending.delete(key)
          const failed = (await Promise.all(batch.map(async (key) => await this.publishKey(key) ? undefined : key)))
            .filter((k): k is string => k !== undefined)
          // Retried by the run loop on its next tick, not in a tight loop here.
          if (failed.length > 0) this.retry.push(...failed)
        }
      } finally {
        this.publishing = undefined
      }
    })()
  }

  private retry: string[] = []

  /**
   * Publishes provider records of `keys` to every peer in the routing table, all on one stream per peer; false when
   * no peer took them. Only while the table holds fewer than k peers: they are then the k closest peers of every key,
   * which is all that kad-dht's provide finds, with a query per key first. Those queries were most of the daemons'
   * CPU in a fan-out (8 nodes pulling an image one holds: every puller publishes each blob as containerd stores it,
   * and each query opens a stream to every peer, which answers with every peer's record). A peer missing from the
   * table gets the records with the next republish, and a lookup that finds no local record asks the network.
   */
  private async publishDirect (keys: string[]): Promise<boolean> {
    const cids = keys.flatMap((k) => { const cid = this.advertised.get(k); return cid === undefined ? [] : [cid] })
    if (cids.length === 0) return true
    const self = { id: this.node.peerId.toMultihash().bytes, multiaddrs: this.node.getMultiaddrs().map((a) => a.bytes) }
    const payload = Buffer.concat(cids.map((cid) => encodeAddProvider(cid.multihash.bytes, self)))
    const signal = AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(provideTimeoutMs)])
    const peers = [...this.dht.routingTable.kb.toIterable()].map((p) => p.peerId)
    const results = await Promise.allSettled(peers.map(async (peer) => {
      const stream = await this.node.dialProtocol(peer, dhtProtocol, { signal })
      try {
        if (!stream.send(payload)) await stream.onDrain({ signal })
        await stream.close({ signal })
      } catch (err) {
        stream.abort(err as Error)
        throw err
      }
    }))
    const failed = results.flatMap((r, i) => r.status === 'rejected' ? [{ peer: peers[i]?.toString(), err: (r.reason as Error).message }] : [])
    if (failed.length > 0 && !this.shutdown.signal.aborted) this.log.debug({ keys: cids.length, failed }, 'provider records not sent to some peers')
    return failed.length < peers.length || this.shutdown.signal.aborted
  }

  /** Publishes one key to its closest peers; false when no peer accepted it. */
  private async publishKey (key: string): Promise<boolean> {
    const cid = this.advertised.get(key)
    if (cid === undefined) return true
    let sent = 0
    const signal = AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(provideTimeoutMs)])
    try {
      for await (const event of this.dht.provide(cid, { signal })) {
        if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') sent++
      }
    } catch (err) {
      if (!this.shutdown.signal.aborted) this.log.debug({ key, err }, 'publishing provider record failed')
    }
    if (!this.advertised.has(key)) {
      // Withdrawn while publishing: provide() re-created the self record, remove it again.
      await this.dht.cancelReprovide(cid).catch(() => {})
      return true
    }
    return sent > 0 || this.shutdown.signal.aborted
  }

  private async run (): Promise<void> {
    const bootstrapBackoff = new Backoff({
      minMs: this.init.bootstrapBackoffMinMs ?? bootstrapBackoffMinMs,
      maxMs: this.init.bootstrapBackoffMaxMs ?? bootstrapBackoffMaxMs,
    })
    const rebootstrapEvery = this.init.rebootstrapIntervalMs ?? rebootstrapIntervalMs
    let lastBootstrap = -Infinity
    let hadPeers = false
    // Table size when every advertised key was last published, and when.
    let publishedAtSize = 0
    let publishedAt = 0
    let joinedAt = 0
    let explored = 0
    while (!this.shutdown.signal.aborted) {
      const empty = this.routingTableSize() === 0
      if (empty || Date.now() - lastBootstrap >= rebootstrapEvery) {
        lastBootstrap = Date.now()
        try {
          await this.bootstrap()
          this.lastBootstrapError = undefined
        } catch (err) {
          if (this.shutdown.signal.aborted) break
          this.lastBootstrapError = err as Error
          this.log.warn({ err, retryInMs: bootstrapBackoff.delayMs }, 'bootstrap failed, will retry')
        }
      }
      const size = this.routingTableSize()
      if (size > 0) {
        if (!hadPeers) {
          this.log.info({ routingTableSize: size }, 'connected to the DHT')
          joinedAt = Date.now()
          explored = 0
        }
        // A joining node knows few peers at first; a few lookups soon after joining fill its table.
        const exploreDue = (this.init.exploreAfterJoinMs ?? exploreAfterJoinMs)[explored]
        if (exploreDue !== undefined && Date.now() - joinedAt >= exploreDue) {
          explored++
          void this.explore()
        }
        // Records published while the table was much smaller reached peers that may not be the closest ones:
        // publish everything again when the table has doubled (and on (re)connection, for keys advertised offline).
        if (!hadPeers || (size >= 2 * publishedAtSize && Date.now() - publishedAt >= republishMinIntervalMs)) {
          for (const key of this.advertised.keys()) this.pending.add(key)
          publishedAtSize = size
          publishedAt = Date.now()
        }
        for (const key of this.retry.splice(0)) this.pending.add(key)
        this.publish()
        bootstrapBackoff.reset()
      } else if (hadPeers) {
        this.log.warn({}, 'routing table became empty, bootstrapping again')
      }
      hadPeers = size > 0
      await this.sleep(hadPeers ? healthCheckIntervalMs : bootstrapBackoff.next())
    }
  }

  /** Lookups of our own id and of random ids: each peer that answers is added to the routing table. */
  private async explore (): Promise<void> {
    const signal = AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(10_000)])
    const targets = [this.node.peerId.toMultihash().bytes, randomBytes(32), randomBytes(32)]
    await Promise.all(targets.map(async (target) => {
      try {
        for await (const _ of this.dht.getClosestPeers(target, { signal })) { /* drain */ }
      } catch (err) {
        if (!signal.aborted) this.log.debug({ err }, 'routing table exploration failed')
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
    const signal = AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(bootstrapTimeoutMs)])
    const candidates = await this.init.bootstrapper.peers({ signal })
    const targets = this.bootstrapTargets(candidates)
    this.bootstrapped = true
    if (targets.length === 0) {
      if (!this.alone) this.log.info({ candidates: candidates.length }, 'no bootstrap peer other than this node: running alone')
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
    while (this.routingTableSize() === 0 && Date.now() < deadline && !signal.aborted) {
      await pause(20, signal)
    }
    if (this.routingTableSize() === 0) throw new BootstrapError('connected to bootstrap peers but none speaks the DHT protocol')
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
        if (ma.getComponents().length === 1) ma = ma.encapsulate(`/tcp/${this.listenPort}`)
        const comps = ma.getComponents()
        const ip = multiaddrIp(ma)
        const port = comps[1]?.name === 'tcp' ? Number(comps[1].value) : undefined
        if (ip !== undefined && port === this.listenPort && (ownIps.has(ip) || ip === '0.0.0.0' || ip === '::')) continue
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
      await this.node.dial(target.addrs.map((a) => multiaddr(a).encapsulate(`/p2p/${target.id ?? ''}`)), { signal: dialSignal() })
      this.log.debug({ peer: id.toString() }, 'bootstrap peer connected')
      return 'connected'
    }
    // No peer id: dial the bare address; libp2p learns the remote id from the Noise handshake.
    let lastError: unknown
    for (const addr of target.addrs) {
      try {
        const conn = await this.node.dial(multiaddr(addr), { signal: dialSignal() })
        this.log.debug({ peer: conn.remotePeer.toString(), addr }, 'bootstrap peer connected')
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

/** `/ipX/<public ip>/tcp/<port>` for each public interface IP covered by the listen addresses. */
function publicInterfaceAddrs (listen: string[], port: number): string[] {
  const out: string[] = []
  const wildcard4 = listen.some((l) => l.startsWith('/ip4/0.0.0.0/'))
  const wildcard6 = listen.some((l) => l.startsWith('/ip6/::/'))
  const explicit = new Set(listen.map((l) => multiaddrIp(l)).filter((ip): ip is string => ip !== undefined))
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal || !isShareableIp(a.address, false) || isPrivateIp(a.address)) continue
      const v6 = a.family === 'IPv6'
      if ((v6 ? wildcard6 : wildcard4) || explicit.has(a.address)) out.push(`/${v6 ? 'ip6' : 'ip4'}/${a.address}/tcp/${port}`)
    }
  }
  return out
}

/** Private ranges that libp2p already treats as verified (RFC 1918, CGNAT, ULA). */
function isPrivateIp (ip: string): boolean {
  return /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/.test(ip) || /^f[cd]/i.test(ip)
}

function actualPort (node: Libp2p<Services>): number | undefined {
  for (const ma of node.getMultiaddrs()) {
    const tcp = ma.getComponents().find((c) => c.name === 'tcp')
    if (tcp?.value !== undefined) return Number(tcp.value)
  }
  return undefined
}

/** The items in random order (Fisher–Yates, in place). */
function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const item = items[i] as T
    items[i] = items[j] as T
    items[j] = item
  }
  return items
}
