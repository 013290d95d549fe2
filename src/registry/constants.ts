// Defaults of the peer mirror that are also Spegel's flag defaults; the CLI's flag spec reads them from here, so each
// is written once. A file of its own so the spec can name them without loading the mirror.

/** Longest wait for a peer while no request to a peer is in flight (`--mirror-resolve-timeout`, Spegel: 20ms). */
export const defaultResolveTimeoutMs = 20
/** Providers asked from the DHT per request (`--mirror-resolve-retries`, Spegel: 3). */
export const defaultResolveRetries = 3
/** A client that takes no bytes of a blob for this long is cut off (--stall-timeout). */
export const defaultStallTimeoutMs = 30_000
