import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { IdentityError } from '../../../src/routing/errors.ts'
import { loadIdentity, PRIVATE_KEY_FILE } from '../../../src/routing/identity.ts'

test('identity persists in <dataDir>/private.key as PKCS#8 PEM, 0600 in a 0755 dir', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'spegel-identity-'))
  t.after(async () => { await rm(base, { recursive: true, force: true }) })
  const dataDir = join(base, 'data')
  const first = peerIdFromPrivateKey(await loadIdentity(dataDir))
  const second = peerIdFromPrivateKey(await loadIdentity(dataDir))
  assert.equal(first.toString(), second.toString())
  assert.match(first.toString(), /^12D3KooW/)
  const file = join(dataDir, PRIVATE_KEY_FILE)
  assert.equal((await stat(file)).mode & 0o777, 0o600)
  assert.equal((await stat(dataDir)).mode & 0o777, 0o755)
  assert.match(await readFile(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/)
})

test('a key written by another tool (Spegel-compatible PKCS#8 Ed25519) is used as is', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'spegel-identity-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  await writeFile(join(dir, PRIVATE_KEY_FILE), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 })
  const peerId = peerIdFromPrivateKey(await loadIdentity(dir))
  const x = publicKey.export({ format: 'jwk' }).x
  assert.equal(Buffer.from(peerId.publicKey?.raw ?? []).toString('base64url'), x)
})

test('without a data dir every start gets a new identity; a broken key file is an IdentityError', async (t) => {
  const a = peerIdFromPrivateKey(await loadIdentity())
  const b = peerIdFromPrivateKey(await loadIdentity(''))
  assert.notEqual(a.toString(), b.toString())
  const dir = await mkdtemp(join(tmpdir(), 'spegel-identity-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  await writeFile(join(dir, PRIVATE_KEY_FILE), 'not a key')
  await assert.rejects(loadIdentity(dir), IdentityError)
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  await writeFile(join(dir, PRIVATE_KEY_FILE), privateKey.export({ format: 'pem', type: 'pkcs8' }))
  await assert.rejects(loadIdentity(dir), (err: Error) => err instanceof IdentityError && /ed25519/.test(err.message))
})
