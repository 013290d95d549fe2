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
 * - One trailing line break (`\n` or `\r\n`) is removed from each value. Spegel uses the bytes as they are; a secret
 *   created with `kubectl create secret --from-file` from a file written by an editor ends with `\n`, which would
 *   silently become part of the password. Only a single line break is removed, so deliberate whitespace survives.
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
    const text = await readFile(path, { encoding: 'utf8', signal })
    return text.replace(/\r?\n$/, '')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return undefined
    }
    throw error
  }
}

/** The `Authorization` header value for a credential: `Basic base64(username:password)`. */
export function basicAuthHeaderValue (auth: BasicAuth): string {
  return `Basic ${Buffer.from(`${auth.username}:${auth.password}`, 'utf8').toString('base64')}`
}
