import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { create as createDigest } from 'multiformats/hashes/digest'

const sha256Code = 0x12

/**
 * The DHT key of a routing key string, identical to Spegel's `createCid`: CIDv1, codec raw (0x55), multihash
 * sha2-256 over the UTF-8 bytes of the string. Provider records are stored under the multihash.
 */
export function keyToCid (key: string): CID {
  const digest = createHash('sha256').update(key, 'utf8').digest()
  return CID.createV1(raw.code, createDigest(sha256Code, new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength)))
}
