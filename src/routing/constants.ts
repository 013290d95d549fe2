/** Defaults of the libp2p router, chosen to match Spegel (pkg/routing/libp2p). */

/** DHT protocol id: isolated from the public IPFS DHT and compatible with Spegel's `/spegel` prefix. */
export const DHT_PROTOCOL = '/spegel/kad/1.0.0'
export const K_BUCKET_SIZE = 20
export const DEFAULT_ROUTER_ADDR = ':5001'

/** Our provider records are re-published this often (Spegel: 15 min). */
export const REPROVIDE_INTERVAL_MS = 15 * 60_000
/** Provider records are valid this long on other nodes (Spegel: 15 min + 2 × 2 min). */
export const PROVIDER_TTL_MS = 19 * 60_000

/** Reuse window of a finished lookup (Spegel: 5 s). */
export const LOOKUP_CACHE_TTL_MS = 5_000
/** Upper bound of one DHT provider query. */
export const LOOKUP_TIMEOUT_MS = 30_000
/** Upper bound of publishing one key to the network. */
export const PROVIDE_TIMEOUT_MS = 60_000
/** Keys published to the network concurrently. */
export const PROVIDE_CONCURRENCY = 16

/** Bootstrap retry backoff while the routing table is empty (Spegel: 50 ms doubling to 10 s). */
export const BOOTSTRAP_BACKOFF_MIN_MS = 50
export const BOOTSTRAP_BACKOFF_MAX_MS = 10_000
/** Re-bootstrap even when healthy, to heal partitions (Spegel: 30 min). */
export const REBOOTSTRAP_INTERVAL_MS = 30 * 60_000
/** One bootstrap round (resolve + dial all candidates) (Spegel: 30 s). */
export const BOOTSTRAP_TIMEOUT_MS = 30_000
/** One dial of one bootstrap candidate. */
export const BOOTSTRAP_DIAL_TIMEOUT_MS = 5_000
/** How often the run loop checks the routing table while healthy. */
export const HEALTH_CHECK_INTERVAL_MS = 1_000
/** After joining, explore the DHT (self + random lookups) at these offsets to fill the routing table. */
export const EXPLORE_AFTER_JOIN_MS = [2_000, 10_000, 60_000]
/** Minimum gap between two "publish everything again because the table doubled" rounds. */
export const REPUBLISH_MIN_INTERVAL_MS = 10_000
/** How often libp2p pings each open connection to check it is alive (libp2p's default: 10 s). */
export const CONNECTION_PING_INTERVAL_MS = 60_000
/** Peers a DHT query asks at once, on as many disjoint paths (Go kad-dht's resiliency is 3; its concurrency is 10). */
export const QUERY_ALPHA = 3
