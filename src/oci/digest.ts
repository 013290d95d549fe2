import { createHash } from 'node:crypto'
import { InvalidDigestError } from './errors.ts'

const hexLength: Readonly<Record<string, number>> = { sha256: 64, sha512: 128 }

/** A validated content digest, `<algorithm>:<lowercase hex>`. */
export interface Digest {
  algorithm: 'sha256' | 'sha512'
  hex: string
  /** The canonical string form, e.g. `sha256:…`. */
  value: string
}

/** Parses and validates a digest string; throws InvalidDigestError. */
export function parseDigest (value: string): Digest {
  const colon = value.indexOf(':')
  if (colon <= 0) {
    throw new InvalidDigestError(`invalid digest ${JSON.stringify(truncate(value))}: missing algorithm`)
  }
  const algorithm = value.slice(0, colon)
  const hex = value.slice(colon + 1)
  const expected = hexLength[algorithm]
  if (expected === undefined) {
    throw new InvalidDigestError(`unsupported digest algorithm ${JSON.stringify(truncate(algorithm))}`)
  }
  if (hex.length !== expected || !/^[0-9a-f]+$/.test(hex)) {
    throw new InvalidDigestError(`invalid ${algorithm} digest: want ${expected} lowercase hex characters`)
  }
  return { algorithm: algorithm as Digest['algorithm'], hex, value }
}

export function isDigest (value: string): boolean {
  try {
    parseDigest(value)
    return true
  } catch {
    return false
  }
}

/** A hash that checks streamed bytes against a digest. */
export function digestHasher (digest: Digest): { update: (chunk: Uint8Array) => void, matches: () => boolean, hex: () => string } {
  const hash = createHash(digest.algorithm)
  let result: string | undefined
  return {
    update: (chunk) => { hash.update(chunk) },
    hex: () => (result ??= hash.digest('hex')),
    matches () { return this.hex() === digest.hex },
  }
}

export function sha256 (data: string | Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex')
}

function truncate (s: string): string {
  return s.length > 80 ? s.slice(0, 80) + '…' : s
}
