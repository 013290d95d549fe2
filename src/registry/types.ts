import type { Readable } from 'node:stream'
import type { ByteRangeSpec } from './range.ts'
import type { DistributionPath } from './path.ts'
import type { ChunkAllowance } from './buffers.ts'

/** A response obtained from elsewhere (a peer) for a distribution request. */
export interface MirrorResponse {
  status: 200 | 206
  headers: Record<string, string>
  /** Absent for HEAD. The registry pipes it to the client and destroys it on disconnect. */
  body?: Readable
  /** Which peer answered, for logs and the debug page. */
  peer?: string
}

export interface MirrorRequest {
  path: DistributionPath
  method: 'GET' | 'HEAD'
  range?: ByteRangeSpec
  signal: AbortSignal
  /** Lets the peer connections use large buffers while the transfer budget has room (the request's lease). */
  allowance?: ChunkAllowance
}

/**
 * Fetches content this node does not hold. Implementations throw a RegistryError (404 with BLOB_UNKNOWN or
 * MANIFEST_UNKNOWN) when nobody can serve it, so containerd falls back to the next host.
 */
export interface Mirror {
  fetch: (request: MirrorRequest) => Promise<MirrorResponse>
}

/** What the registry reports about each request it answered, for metrics and the debug page. */
export interface RequestRecord {
  path: DistributionPath
  method: string
  status: number
  source: 'local' | 'peer' | 'none'
  /** `peer` for another node's mirror (`X-Spegel-Mirrored: true`), else `node`: this node's containerd. */
  requester: 'node' | 'peer'
  bytes: number
  durationMs: number
}
