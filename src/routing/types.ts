/**
 * The routing seam: how a node tells the cluster which content it holds and finds the nodes that hold a key.
 *
 * Keys are strings: digests as `sha256:<hex>`, tags as `<registry>/<repository>:<tag>` (see keys.ts for the
 * DHT key derivation). Two implementations exist: `Libp2pRouter` (Kademlia DHT) and `MemoryRouter` (tests).
 * Both pass the shared conformance suite in test/routing/conformance.ts.
 */

/** A node that provides a key. */
export interface Peer {
  /** libp2p peer id (`12D3KooW…`) or, for the memory router, any unique name. */
  id: string
  /**
   * IP addresses (IPv4 and IPv6, no ports, no brackets) the DHT knows for that peer, unique, in the order learned.
   * Peers are assumed to serve their registry on the same port as this node (Spegel's rule).
   */
  addresses: string[]
}

/** A connected peer, for the debug page. */
export interface PeerInfo {
  id: string
  /** Multiaddrs of the open connections to that peer (`/ip4/10.0.0.2/tcp/5001`). */
  addresses: string[]
}

/** Why the node is or is not ready, for logs and the debug page. */
export interface RouterStatus {
  /** What `Router.ready()` answers. */
  ready: boolean
  /** Peers in the routing table (the DHT's k-buckets; the memory router's: the other routers of its network). */
  routingTableSize: number
  /** Bootstrapping found no node but this one: a one-node cluster, ready without peers. */
  alone: boolean
  /** Why the last bootstrap attempt failed, if it did. */
  lastBootstrapError?: string
}

export interface RouterOptions {
  signal?: AbortSignal
}

export interface LookupOptions {
  /** Stop after this many providers (≥ 1). */
  count: number
  signal?: AbortSignal
  /**
   * Search the whole network: no cached answer, no shortcut through the records this node holds. For a second look
   * after the providers found first have failed; costs every node some work, so not for the first try.
   */
  thorough?: boolean
}

export interface Router {
  /** This node's id, as reported in `Peer.id` by other nodes. */
  readonly peerId: string
  /**
   * True once the node can take part: it has DHT peers, or bootstrapping showed it is alone (a one-node cluster is
   * ready). See Libp2pRouter for the exact rule.
   */
  ready(): boolean
  /**
   * Streams the providers of `key` as they are found, so the caller can start fetching from the first one.
   * Never yields this node itself; yields each peer at most once; ends (without throwing) when the query is
   * exhausted, `count` providers were yielded, or `signal` aborts. An unknown key ends with no peers. The order is
   * unspecified: Libp2pRouter yields the providers this node already knows in random order, so that the nodes of a
   * cluster spread their requests over every holder instead of all asking the same one first.
   */
  lookup(key: string, options: LookupOptions): AsyncIterable<Peer>
  /**
   * Announces that this node provides `keys`. Resolves once the keys are recorded locally; publishing to the
   * network happens in the background (queued while offline, retried, re-published before records expire).
   */
  advertise(keys: string[], options?: RouterOptions): Promise<void>
  /** Stops providing `keys`. Records already stored on other nodes expire after the provider TTL. */
  withdraw(keys: string[], options?: RouterOptions): Promise<void>
  /** Stops answering as a provider and shuts the node down; `ready()` is false from then on. Idempotent. */
  close(): Promise<void>
}

/** What the debug page, the logs and the readiness detail show of a router; the registry needs none of it. */
export interface RouterIntrospection {
  /** Readiness with the reasons behind it; `status().ready` is `ready()`. */
  status(): RouterStatus
  /** The addresses this node announces to its peers, as multiaddrs ending in `/p2p/<peerId>`. */
  multiaddrs(): string[]
  /** Currently connected peers; never this node itself. Empty once closed. */
  peers(): PeerInfo[]
}
