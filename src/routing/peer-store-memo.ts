import type { Peer, PeerData, PeerId, PeerStore } from '@libp2p/interface'

/**
 * libp2p merges into its peer store on every stream it opens or accepts (the stream's protocol), and kad-dht on every
 * provider record and every peer it hears of (their addresses). Each merge takes the peer's write lock, reads and
 * decodes its record, merges, encodes, compares and writes it back: in an 8-node fan-out about a tenth of a pulling
 * node's CPU went there, nearly all of it merging what the record already held.
 *
 * This skips a merge of protocols and addresses that the peer's record held at its last real merge, for up to
 * `ttlMs` after that merge. Merges only add, so what a merge saw stays in the record until something takes it away:
 * a `patch`, `save` or `delete` of the peer (identify's signed record patches addresses), which drops what is
 * remembered of it, or age (an address not merged again within an hour is dropped on read), which the TTL keeps
 * far away: a merge reaches the store at least once per TTL while the same data keeps coming.
 */
export interface MergeMemoOptions {
  /** How long after a real merge the same data is skipped (default 30 s). */
  ttlMs?: number
  /** Peers remembered at most; beyond it the memo starts over (default 4096). */
  maxPeers?: number
  now?: () => number
}

interface Seen {
  at: number
  peer: Peer
  protocols: Set<string>
  addresses: Set<string>
}

const defaultTtlMs = 30_000
const defaultMaxPeers = 4096

/** Wraps `store`'s merge (and the methods that can take data away) in place; returns a function that undoes it. */
export function memoizePeerStoreMerges (store: PeerStore, options: MergeMemoOptions = {}): () => void {
  const ttlMs = options.ttlMs ?? defaultTtlMs
  const maxPeers = options.maxPeers ?? defaultMaxPeers
  const now = options.now ?? (() => performance.now())
  const seen = new Map<string, Seen>()
  const original = { merge: store.merge, patch: store.patch, save: store.save, delete: store.delete }
  const merge = original.merge.bind(store)
  /** `method`, forgetting the peer (its first argument) before and after: it may take data away. */
  const forgetting = <A extends [PeerId, ...unknown[]], R>(method: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
    seen.delete(args[0].toString())
    try {
      return await method(...args)
    } finally {
      seen.delete(args[0].toString())
    }
  }

  store.merge = async (id: PeerId, data: PeerData, opts?: Parameters<PeerStore['merge']>[2]): Promise<Peer> => {
    const key = id.toString()
    const known = seen.get(key)
    if (known !== undefined && now() - known.at < ttlMs && covers(known, data, key)) return known.peer
    const peer = await merge(id, data, opts)
    if (seen.size >= maxPeers && !seen.has(key)) seen.clear()
    seen.set(key, {
      at: now(),
      peer,
      protocols: new Set(peer.protocols),
      addresses: new Set(peer.addresses.map((a) => a.multiaddr.toString())),
    })
    return peer
  }
  store.patch = forgetting(original.patch.bind(store))
  store.save = forgetting(original.save.bind(store))
  store.delete = forgetting(original.delete.bind(store))
  return () => {
    Object.assign(store, original)
    seen.clear()
  }
}

/** Whether merging `data` would add nothing to what was seen: only protocols and addresses, all of them known. */
function covers (known: Seen, data: PeerData, peer: string): boolean {
  for (const field of Object.keys(data)) {
    const value = data[field as keyof PeerData]
    if (value === undefined) continue
    if (field !== 'protocols' && field !== 'multiaddrs') return false
  }
  for (const protocol of data.protocols ?? []) if (!known.protocols.has(protocol)) return false
  const suffix = `/p2p/${peer}`
  for (const ma of data.multiaddrs ?? []) {
    const text = ma.toString()
    // The store keeps a peer's own addresses without its /p2p/ suffix.
    if (!known.addresses.has(text.endsWith(suffix) ? text.slice(0, -suffix.length) : text)) return false
  }
  return true
}
