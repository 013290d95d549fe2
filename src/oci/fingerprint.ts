import { MediaType } from './mediatypes.ts'

/** Content larger than this is never parsed to guess its type. */
export const maxFingerprintSize = 4 * 1024 * 1024

/**
 * Guesses the media type of a small blob from its bytes: manifests and indexes declare or imply their type; other JSON
 * (configs, SBOMs, attestations, artifact blobs) and everything else is served as what it is, so nothing a store holds
 * becomes unservable because its shape is unfamiliar.
 */
export function fingerprintMediaType (bytes: Uint8Array): string {
  let doc: unknown
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
  } catch {
    return MediaType.octetStream
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return MediaType.octetStream
  const o = doc as Record<string, unknown>
  if (Object.keys(o).length === 0) return MediaType.ociEmpty
  if (o.schemaVersion === 2) {
    if (typeof o.mediaType === 'string' && o.mediaType !== '') return o.mediaType
    if (Array.isArray(o.manifests)) return MediaType.ociIndex
    if (o.config !== undefined && Array.isArray(o.layers)) return MediaType.ociManifest
  }
  if (typeof o.architecture === 'string' && typeof o.os === 'string' && o.rootfs !== undefined) return MediaType.ociConfig
  return 'application/json'
}
