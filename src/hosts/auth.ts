import { timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'

/** Where the Helm chart mounts the optional basic-auth secret. */
export const defaultBasicAuthDir = '/etc/secrets/basic-auth'

/**
 * The registry's basic-auth credential, shared by every node: served with it (`spegel registry`), sent with it to
 * peers, and written into hosts.toml for containerd (`spegel configuration`). Read from SPEGEL_BASIC_AUTH_DIR, else
 * where the chart mounts it; see readBasicAuth.
 */
export async function basicAuthFromEnv (env: Record<string, string | undefined>, options: { signal?: AbortSignal } = {}): Promise<BasicAuth | undefined> {
  return await readBasicAuth(env.SPEGEL_BASIC_AUTH_DIR ?? defaultBasicAuthDir, options)
}

export interface BasicAuth {
  username: string
  password: string
}

/**
 * Reads the shared basic-auth credential from `<dir>/username` and `<dir>/password`.
 *
 * - Both files absent (or both empty) ⇒ `undefined`: auth is disabled.
 * - Only `username` ⇒ the password is empty; only `password` ⇒ the username is empty.
 * - The files' bytes are used as they are, trailing line breaks included, exactly as Spegel does: a Go node and a
 *   TypeScript node reading the same secret must send and expect the same header. Each byte becomes one character
 *   (latin1), so any bytes survive the round trip into the header (basicAuthHeaderValue encodes them back).
 */
export async function readBasicAuth (dir: string = defaultBasicAuthDir, options: { signal?: AbortSignal } = {}): Promise<BasicAuth | undefined> {
  const username = await readOptional(join(dir, 'username'), options.signal)
  const password = await readOptional(join(dir, 'password'), options.signal)
  if ((username ?? '') === '' && (password ?? '') === '') {
    return undefined
  }
  return { username: username ?? '', password: password ?? '' }
}

async function readOptional (path: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  try {
    return await readFile(path, { encoding: 'latin1', signal })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return undefined
    }
    throw error
  }
}

/** The `Authorization` header value for a credential: `Basic base64(username:password)`. */
export function basicAuthHeaderValue (auth: BasicAuth): string {
  return `Basic ${Buffer.from(`${auth.username}:${auth.password}`, 'latin1').toString('base64')}`
}

/**
 * A check of `Authorization` headers against `auth`, as Go's Request.BasicAuth does for Spegel: the scheme `Basic ` in
 * any case, strict base64, user and password split at the first colon, each compared in constant time. The credential's
 * bytes are made once, not per request.
 */
export function basicAuthChecker (auth: BasicAuth): (header: string | undefined) => boolean {
  const username = Buffer.from(auth.username, 'latin1')
  const password = Buffer.from(auth.password, 'latin1')
  const same = (a: Buffer, b: Buffer): boolean => a.length === b.length && timingSafeEqual(a, b)
  return (header) => {
    const given = parseBasicAuthHeader(header)
    if (given === undefined) return false
    // Both compared, whatever the first says: the time taken does not tell which one was wrong.
    const user = same(given.username, username)
    const pass = same(given.password, password)
    return user && pass
  }
}

function parseBasicAuthHeader (header: string | undefined): { username: Buffer, password: Buffer } | undefined {
  const prefix = 'basic '
  if (header === undefined || header.length < prefix.length || header.slice(0, prefix.length).toLowerCase() !== prefix) return undefined
  const encoded = header.slice(prefix.length)
  // Node's decoder skips characters outside the alphabet; Go's StdEncoding refuses them, and so do we.
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(encoded)) return undefined
  const decoded = Buffer.from(encoded, 'base64')
  const colon = decoded.indexOf(0x3a)
  if (colon === -1) return undefined
  return { username: decoded.subarray(0, colon), password: decoded.subarray(colon + 1) }
}
