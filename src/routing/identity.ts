import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { IdentityError } from './errors.ts'
import type { PrivateKey } from '@libp2p/interface'

/** File name inside the data dir, as in Spegel. */
export const PRIVATE_KEY_FILE = 'private.key'

/**
 * The node's libp2p identity (Ed25519). Without `dataDir` a fresh key is made per start. With `dataDir` the key is
 * loaded from, or created at, `<dataDir>/private.key`: PEM `PRIVATE KEY` (PKCS#8 Ed25519), file 0600, dir 0755,
 * the same format Spegel writes, so the peer id survives restarts and files are interchangeable with Spegel.
 */
export async function loadIdentity (dataDir?: string): Promise<PrivateKey> {
  if (dataDir === undefined || dataDir === '') return await generateKeyPair('Ed25519')
  const path = join(dataDir, PRIVATE_KEY_FILE)
  let pem: string | undefined
  try {
    pem = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new IdentityError(`cannot read ${path}`, { cause: err })
    }
  }
  if (pem !== undefined) return await privateKeyFromPem(pem, path)

  // Only a directory we create gets an exact 0755 (the umask may narrow it); an existing one is left alone.
  if (await mkdir(dataDir, { recursive: true, mode: 0o755 }) !== undefined) await chmod(dataDir, 0o755)
  const { privateKey } = generateKeyPairSync('ed25519')
  const created = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
  // Write then rename, so a crash never leaves a truncated key that would block every later start.
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, created, { mode: 0o600 })
  await chmod(tmp, 0o600) // the umask may have narrowed the mode, never widened it; make it exact
  await rename(tmp, path)
  return await privateKeyFromPem(created, path)
}

async function privateKeyFromPem (pem: string, path: string): Promise<PrivateKey> {
  let seed: Buffer
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' })
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new Error(`key type is ${key.asymmetricKeyType ?? 'unknown'}, expected ed25519`)
    }
    const jwk = key.export({ format: 'jwk' })
    if (typeof jwk.d !== 'string') throw new Error('missing private part')
    seed = Buffer.from(jwk.d, 'base64url')
  } catch (err) {
    throw new IdentityError(`invalid private key in ${path}: ${(err as Error).message}`, { cause: err })
  }
  return await generateKeyPairFromSeed('Ed25519', seed)
}
