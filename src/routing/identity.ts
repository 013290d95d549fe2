import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { generateKeyPair, privateKeyFromRaw } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from '../log/index.ts'
import { IdentityError } from './errors.ts'

/** File name inside the data dir, as in Spegel. */
export const privateKeyFile = 'private.key'

/**
 * The node's libp2p identity (Ed25519). Without `dataDir` a fresh key is made per start. With `dataDir` the key is
 * loaded from, or created at, `<dataDir>/private.key`: PEM `PRIVATE KEY` (PKCS#8 Ed25519), file 0600, dir 0755,
 * the same format Spegel writes, so the peer id survives restarts and files are interchangeable with Spegel.
 *
 * A key file that can be read but not used (truncated, empty, garbage, another key type) is renamed to
 * `private.key.corrupt-<unix ms>` (kept for inspection, never deleted), a warning is logged and a new key is made:
 * otherwise every start would fail until someone deleted it by hand. Throws IdentityError when the file cannot be
 * read (EACCES, a directory) or the data dir cannot be written (read-only, not a directory); the message is one line
 * naming the directory and the way out.
 */
export async function loadIdentity (dataDir: string | undefined, logger: Logger): Promise<PrivateKey> {
  if (dataDir === undefined || dataDir === '') return await generateKeyPair('Ed25519')
  const path = join(dataDir, privateKeyFile)
  let pem: string | undefined
  try {
    pem = await readFile(path, 'utf8')
  } catch (err) {
    // ENOTDIR (the data dir is a file) is reported below, with the advice for an unusable data dir.
    if (errorCode(err) !== 'ENOENT' && errorCode(err) !== 'ENOTDIR') throw new IdentityError(`cannot read ${path}: ${errorCode(err) ?? (err as Error).message}`, { cause: err })
  }
  if (pem !== undefined) {
    const key = ed25519Key(pem)
    if (!(key instanceof Error)) return key
    const movedTo = `${path}.corrupt-${Date.now()}`
    await writing(dataDir, async () => { await rename(path, movedTo) })
    logger.warn({ path, movedTo, reason: key.message }, 'identity key is unusable; moved it aside and created a new one (this node gets a new peer id)')
  }

  const { privateKey } = generateKeyPairSync('ed25519')
  const created = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
  // Write then rename, so a crash never leaves a truncated key behind.
  const tmp = `${path}.${process.pid}.tmp`
  await writing(dataDir, async () => {
    // Only a directory we create gets an exact 0755 (the umask may narrow it); an existing one is left alone.
    if (await makeDir(dataDir)) await chmod(dataDir, 0o755)
    try {
      await writeFile(tmp, created, { mode: 0o600 })
      await chmod(tmp, 0o600) // the umask may have narrowed the mode, never widened it; make it exact
      await rename(tmp, path)
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {})
      throw err
    }
  })
  const key = libp2pKey(privateKey)
  if (key instanceof Error) throw key
  return key
}

/** The libp2p key of a PKCS#8 PEM Ed25519 key, or why there is none. */
function ed25519Key (pem: string): PrivateKey | Error {
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' })
    if (key.asymmetricKeyType !== 'ed25519') return new Error(`key type is ${key.asymmetricKeyType ?? 'unknown'}, expected ed25519`)
    return libp2pKey(key)
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err))
  }
}

/**
 * libp2p's form of an Ed25519 key: the seed followed by the public key, both as Node's crypto has them (libp2p's own
 * generateKeyPairFromSeed derives the public key in JavaScript, tens of milliseconds of each start).
 */
function libp2pKey (key: KeyObject): PrivateKey | Error {
  const jwk = key.export({ format: 'jwk' })
  if (typeof jwk.d !== 'string' || typeof jwk.x !== 'string') return new Error('missing private or public part')
  return privateKeyFromRaw(Buffer.concat([Buffer.from(jwk.d, 'base64url'), Buffer.from(jwk.x, 'base64url')]))
}

/**
 * `mkdir -p` (mode 0755) that reports the real reason for a failure: Node's recursive mkdir says ENOENT when the
 * parent is on a read-only file system. Returns whether `dir` itself was created.
 */
async function makeDir (dir: string): Promise<boolean> {
  try {
    await mkdir(dir, { mode: 0o755 })
    return true
  } catch (err) {
    const code = errorCode(err)
    if (code === 'EEXIST' && (await stat(dir)).isDirectory()) return false
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err
  }
  await makeDir(dirname(dir))
  await mkdir(dir, { mode: 0o755 })
  return true
}

/** Runs a write to the data dir, turning file-system refusals into an IdentityError that says what to do. */
async function writing (dataDir: string, write: () => Promise<void>): Promise<void> {
  try {
    await write()
  } catch (err) {
    const code = errorCode(err)
    const fix = `mount a writable volume at ${dataDir}, or unset --data-dir / DATA_DIR to use a fresh identity on every start`
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
      throw new IdentityError(`data dir ${dataDir} is not writable (${code}): ${fix}`, { cause: err })
    }
    if (code === 'ENOTDIR' || code === 'EEXIST') {
      throw new IdentityError(`data dir ${dataDir} is not a directory (${code}): ${fix}`, { cause: err })
    }
    throw new IdentityError(`cannot write the identity key in ${dataDir} (${code ?? (err as Error).message}): ${fix}`, { cause: err })
  }
}

function errorCode (err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return typeof code === 'string' ? code : undefined
}
