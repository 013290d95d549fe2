/**
 * HTTP header names, one constant per header, spelled as we send them (lower case, as Node hands incoming names
 * over, so the same constant indexes `req.headers`).
 */
export const Header = {
  accept: 'accept',
  acceptRanges: 'accept-ranges',
  allow: 'allow',
  authorization: 'authorization',
  cacheControl: 'cache-control',
  contentLength: 'content-length',
  contentRange: 'content-range',
  contentType: 'content-type',
  dockerContentDigest: 'docker-content-digest',
  dockerDistributionApiVersion: 'docker-distribution-api-version',
  location: 'location',
  ociNamespace: 'oci-namespace',
  range: 'range',
  retryAfter: 'retry-after',
  transferEncoding: 'transfer-encoding',
  userAgent: 'user-agent',
  wwwAuthenticate: 'www-authenticate',
  /** `true` on requests between Spegel nodes: such a request is never forwarded to other peers again. */
  spegelMirrored: 'x-spegel-mirrored',
  /**
   * A peer sends `accept` when it takes a blob this node is still downloading; the answer then carries `true`. Such
   * bytes are unverified until the download ends: the receiver hashes them from byte 0 as it does for any peer's bytes.
   */
  spegelInflight: 'x-spegel-inflight',
} as const
