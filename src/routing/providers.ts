import type { QueryEvent } from '@libp2p/kad-dht'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import type { Logger } from '../log/index.ts'
import { Limiter } from '../util/limiter.ts'
import { uniqueIps } from './addr.ts'
import { queryConcurrency } from './constants.ts'
import { decodeProviders, encodeGetProviders, type WirePeer } from './kad-message.ts'
import { KadSessions } from './kad-sessions.ts'
import { keyToCid } from './keys.ts'
import type { DhtService, Services } from './libp2p-node.ts'
import type { LookupOptions, Peer } from './types.ts'

export interface ProviderLookupsOptions {
  node: Libp2p<Services>
  dht: DhtService
  log: Logger
  allowLoopback: boolean
  /** k: while the routing table holds fewer peers, the whole cluster is within reach of one ask each. */
  kBucketSize: number
  /** Bounds a thorough lookup (the cached ones are bounded by the LookupCache). */
  lookupTimeoutMs: number
  /** Aborted when the router closes. */
  shutdown: AbortSignal
}

/** Finding the providers of a key: the records this node holds, then the peers (asked directly, or a DHT query). */
export class ProviderLookups {
  private readonly options: ProviderLookupsOptions
  /** DHT provider queries in flight (see queryConcurrency). */
  private readonly queries = new Limiter(queryConcurrency)
  private readonly sessions: KadSessions

  constructor (options: ProviderLookupsOptions) {
    this.options = options
    this.sessions = new KadSessions({ node: options.node, shutdown: options.shutdown })
  }

  /** A thorough lookup: no cache, and the records this node holds do not cut the search short. */
  async * thorough (key: string, options: LookupOptions): AsyncGenerator<Peer> {
    if (options.count < 1) return
    const signals = [this.options.shutdown, AbortSignal.timeout(this.options.lookupTimeoutMs)]
    if (options.signal !== undefined) signals.push(options.signal)
    let yielded = 0
    try {
      for await (const peer of this.query(key, AbortSignal.any(signals), false)) {
        yield peer
        if (++yielded >= options.count) return
      }
    } catch (err) {
      // Like a cached lookup: an ended or failed query is an exhausted one.
      if (options.signal?.aborted !== true && !this.options.shutdown.aborted) this.options.log.debug({ key, err }, 'thorough provider lookup failed')
    }
  }

  /**
   * Providers of a key: first the records this node stores, then a DHT query. While the routing table holds fewer
   * than k peers the whole cluster is within every publisher's k closest, so every record reaches this node and a
   * local answer is complete: the query, which costs every node CPU while the caller waits for its first bytes, is
   * skipped (unless `localFirst` is false: a thorough lookup after those providers failed, or for a record that has
   * not reached this node yet). Larger clusters, and keys with no local record, always query the DHT.
   */
  async * query (key: string, signal: AbortSignal, localFirst = true): AsyncGenerator<Peer> {
    const self = this.options.node.peerId
    const cid = keyToCid(key)
    const seen = new Set<string>([self.toString()])
    let local = 0
    // Shuffled: the record store lists providers in the same order on every node, which would send every node's
    // first request for a blob to the same holder (Spegel #670) while the others idle.
    for (const id of shuffle(await this.options.dht.providers.getProviders(cid, { signal }))) {
      if (seen.has(id.toString())) continue
      seen.add(id.toString())
      const peer = await this.peerFor(id, [])
      if (peer === undefined) continue
      local++
      yield peer
    }
    const small = this.options.dht.routingTable.size < this.options.kBucketSize
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
      for await (const event of this.options.dht.findProviders(cid, { signal }) as AsyncIterable<QueryEvent>) {
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
    const peers = [...this.options.dht.routingTable.kb.toIterable()].map((p) => p.peerId)
    const answers = new Map(peers.map((peer, i) => [i, this.askPeer(peer, request, signal).then((providers) => ({ i, providers }), (err: unknown) => {
      if (!signal.aborted && !this.options.shutdown.aborted) this.options.log.debug({ peer: peer.toString(), err }, 'provider request failed')
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

  /** One GET_PROVIDERS request (on the peer's kept stream, see KadSessions), and the providers of its answer. */
  private async askPeer (peer: PeerId, request: Uint8Array, signal: AbortSignal): Promise<WirePeer[]> {
    return decodeProviders(await this.sessions.ask(peer, request, signal))
  }

  /** A provider with its usable addresses (from the record, else the peer store); undefined when it has none. */
  private async peerFor (id: PeerId, multiaddrs: Multiaddr[]): Promise<Peer | undefined> {
    let addresses = uniqueIps(multiaddrs, this.options.allowLoopback)
    if (addresses.length === 0) {
      const known = await this.options.node.peerStore.get(id).catch(() => undefined)
      addresses = uniqueIps(known?.addresses.map((a) => a.multiaddr) ?? [], this.options.allowLoopback)
    }
    return addresses.length === 0 ? undefined : { id: id.toString(), addresses }
  }
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
