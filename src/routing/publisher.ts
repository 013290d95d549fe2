import type { Libp2p } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import type { Logger } from '../log/index.ts'
import { dhtProtocol, directBatchKeys, provideConcurrency, provideTimeoutMs } from './constants.ts'
import { encodeAddProvider } from './kad-message.ts'
import { keyToCid } from './keys.ts'
import type { DhtService, Services } from './libp2p-node.ts'
import type { RouterOptions } from './types.ts'

export interface ProviderPublisherOptions {
  node: Libp2p<Services>
  dht: DhtService
  log: Logger
  /** k: while the routing table holds fewer peers, records go straight to every peer in it. */
  kBucketSize: number
  /** Aborted when the router closes. */
  shutdown: AbortSignal
}

/**
 * The keys this node advertises, and the queue that publishes their provider records: each key is recorded locally at
 * once (so lookups reaching this node find it) and queued; the queue runs while the routing table has peers. Keys that
 * no peer took wait in `retry` for the join loop's next tick (see JoinLoop), which also queues every key again when
 * the table has grown.
 */
export class ProviderPublisher {
  private readonly options: ProviderPublisherOptions
  private readonly advertised = new Map<string, CID>()
  /** Keys to publish to the network once peers exist. */
  private readonly pending = new Set<string>()
  private retry: string[] = []
  private publishing?: Promise<void>

  constructor (options: ProviderPublisherOptions) {
    this.options = options
  }

  async advertise (keys: string[], options?: RouterOptions): Promise<void> {
    const self = this.options.node.peerId
    for (const key of keys) {
      options?.signal?.throwIfAborted()
      const cid = keyToCid(key)
      this.advertised.set(key, cid)
      await this.options.dht.providers.addProvider(cid, self)
      this.pending.add(key)
    }
    this.publish()
  }

  async withdraw (keys: string[], options?: RouterOptions): Promise<void> {
    for (const key of keys) {
      options?.signal?.throwIfAborted()
      this.advertised.delete(key)
      this.pending.delete(key)
      // Deleting our self record stops both answering for it and kad-dht's re-publishing of it.
      await this.options.dht.cancelReprovide(keyToCid(key))
    }
  }

  /** Queues every advertised key again (after joining, or once the routing table has grown). */
  republishAll (): void {
    for (const key of this.advertised.keys()) this.pending.add(key)
  }

  /** Queues the keys no peer took last time, and publishes what is queued. */
  tick (): void {
    for (const key of this.retry.splice(0)) this.pending.add(key)
    this.publish()
  }

  /** Resolves when every queued key has been published (or failed and awaits a retry). */
  async idle (): Promise<void> {
    while (this.publishing !== undefined) await this.publishing
  }

  /** Waits for the queue to stop (the router has closed), then stops answering as a provider for every key. */
  async close (): Promise<void> {
    await this.publishing?.catch(() => {})
    // Best effort; the node stops right after.
    for (const cid of this.advertised.values()) await this.options.dht.cancelReprovide(cid).catch(() => {})
    this.advertised.clear()
  }

  /** Starts publishing pending keys unless already running or there is nobody to publish to. */
  private publish (): void {
    if (this.publishing !== undefined || this.pending.size === 0 || this.options.shutdown.aborted) return
    if (this.options.dht.routingTable.size === 0) return
    this.publishing = (async () => {
      try {
        while (this.pending.size > 0 && !this.options.shutdown.aborted && this.options.dht.routingTable.size > 0) {
          if (this.options.dht.routingTable.size < this.options.kBucketSize) {
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
    const self = { id: this.options.node.peerId.toMultihash().bytes, multiaddrs: this.options.node.getMultiaddrs().map((a) => a.bytes) }
    const payload = Buffer.concat(cids.map((cid) => encodeAddProvider(cid.multihash.bytes, self)))
    const signal = AbortSignal.any([this.options.shutdown, AbortSignal.timeout(provideTimeoutMs)])
    const peers = [...this.options.dht.routingTable.kb.toIterable()].map((p) => p.peerId)
    const results = await Promise.allSettled(peers.map(async (peer) => {
      const stream = await this.options.node.dialProtocol(peer, dhtProtocol, { signal })
      try {
        if (!stream.send(payload)) await stream.onDrain({ signal })
        await stream.close({ signal })
      } catch (err) {
        stream.abort(err as Error)
        throw err
      }
    }))
    const failed = results.flatMap((r, i) => r.status === 'rejected' ? [{ peer: peers[i]?.toString(), err: (r.reason as Error).message }] : [])
    if (failed.length > 0 && !this.options.shutdown.aborted) this.options.log.debug({ keys: cids.length, failed }, 'provider records not sent to some peers')
    return failed.length < peers.length || this.options.shutdown.aborted
  }

  /** Publishes one key to its closest peers; false when no peer accepted it. */
  private async publishKey (key: string): Promise<boolean> {
    const cid = this.advertised.get(key)
    if (cid === undefined) return true
    let sent = 0
    const signal = AbortSignal.any([this.options.shutdown, AbortSignal.timeout(provideTimeoutMs)])
    try {
      for await (const event of this.options.dht.provide(cid, { signal })) {
        if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') sent++
      }
    } catch (err) {
      if (!this.options.shutdown.aborted) this.options.log.debug({ key, err }, 'publishing provider record failed')
    }
    if (!this.advertised.has(key)) {
      // Withdrawn while publishing: provide() re-created the self record, remove it again.
      await this.options.dht.cancelReprovide(cid).catch(() => {})
      return true
    }
    return sent > 0 || this.options.shutdown.aborted
  }
}
