/** Defaults of the libp2p router, chosen to match Spegel (pkg/routing/libp2p). */

/** DHT protocol id: isolated from the public IPFS DHT and compatible with Spegel's `/spegel` prefix. */
export const dhtProtocol = '/spegel/kad/1.0.0'
export const kBucketSize = 20
export const defaultRouterAddr = ':5001'

/** Our provider records are re-published this often (Spegel: 15 min). */
export const reprovideIntervalMs = 15 * 60_000
/** Provider records are valid this long on other nodes (Spegel: 15 min + 2 × 2 min). */
export const providerTtlMs = 19 * 60_000

/** Reuse window of a finished lookup (Spegel: 5 s). */
export const lookupCacheTtlMs = 5_000
/** Upper bound of one DHT provider query. */
export const lookupTimeoutMs = 30_000
/** Upper bound of publishing one key to the network. */
export const provideTimeoutMs = 60_000
/** Keys published to the network concurrently. */
export const provideConcurrency = 16
/** Keys whose provider records share one stream to each peer in a cluster smaller than k (about 100 bytes each). */
export const directBatchKeys = 512
/**
 * DHT provider queries this node runs at once; more wait their turn. Each query opens at most one stream at a time to
 * a given peer, and kad-dht refuses streams beyond 32 inbound per connection (js) or per its resource limits (Go): a
 * burst of lookups (a busy node starting many pods in a cluster larger than k) would otherwise have peers refuse
 * streams and lookups find nobody. With the 16 publishing streams, 32 at most reach one peer.
 */
export const queryConcurrency = 16
/** Streams per connection kad-dht accepts from one peer (js-libp2p's default is 32): room for a Go peer's bursts. */
export const dhtMaxInboundStreams = 64

/** Bootstrap retry backoff while the routing table is empty (Spegel: 50 ms doubling to 10 s). */
export const bootstrapBackoffMinMs = 50
export const bootstrapBackoffMaxMs = 10_000
/** Re-bootstrap even when healthy, to heal partitions (Spegel: 30 min). */
export const rebootstrapIntervalMs = 30 * 60_000
/** One bootstrap round (resolve + dial all candidates) (Spegel: 30 s). */
export const bootstrapTimeoutMs = 30_000
/** One dial of one bootstrap candidate. */
export const bootstrapDialTimeoutMs = 5_000
/** How often the run loop checks the routing table while healthy. */
export const healthCheckIntervalMs = 1_000
/** After joining, explore the DHT (self + random lookups) at these offsets to fill the routing table. */
export const exploreAfterJoinMs = [2_000, 10_000, 60_000]
/** Minimum gap between two "publish everything again because the table doubled" rounds. */
export const republishMinIntervalMs = 10_000
/** How often libp2p pings each open connection to check it is alive (libp2p's default: 10 s). */
export const connectionPingIntervalMs = 60_000
/** Peers a DHT query asks at once, on as many disjoint paths (Go kad-dht's resiliency is 3; its concurrency is 10). */
export const queryAlpha = 3
