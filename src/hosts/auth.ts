import { readFile } from 'node:fs/promises'
import { join } from 'node:path'

/** Where the Helm chart mounts the optional basic-auth secret. */
export const defaultBasicAuthDir = '/etc/secrets/basic-auth'

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
