import assert from 'node:assert/strict'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { test, type TestContext } from 'node:test'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createLogger, type Logger } from '../../../src/log/index.ts'
import { IdentityError } from '../../../src/routing/errors.ts'
import { loadIdentity, privateKeyFile } from '../../../src/routing/identity.ts'
import { readOnlyDir } from '../../helpers/tmp.ts'

/** A logger whose JSON lines are kept for assertions. */
function capturingLogger (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  return { logger: createLogger('DEBUG', stream), lines }
}

const quiet = (): Logger => capturingLogger().logger

async function tempDir (t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spegel-identity-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

test('identity persists in <dataDir>/private.key as PKCS#8 PEM, 0600 in a 0755 dir', async (t) => {
  const base = await tempDir(t)
  const dataDir = join(base, 'data', 'nested')
  const first = peerIdFromPrivateKey(await loadIdentity(dataDir, quiet()))
  const second = peerIdFromPrivateKey(await loadIdentity(dataDir, quiet()))
  assert.equal(first.toString(), second.toString())
  assert.match(first.toString(), /^12D3KooW/)
  const file = join(dataDir, privateKeyFile)
  assert.equal((await stat(file)).mode & 0o777, 0o600)
  assert.equal((await stat(dataDir)).mode & 0o777, 0o755)
  assert.match(await readFile(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/)
  assert.deepEqual(await readdir(dataDir), [privateKeyFile], 'no temporary file is left behind')
})

test('a key written by another tool (Spegel-compatible PKCS#8 Ed25519) is used as is', async (t) => {
  const dir = await tempDir(t)
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  await writeFile(join(dir, privateKeyFile), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 })
  const peerId = peerIdFromPrivateKey(await loadIdentity(dir, quiet()))
  const x = publicKey.export({ format: 'jwk' }).x
  assert.equal(Buffer.from(peerId.publicKey?.raw ?? []).toString('base64url'), x)
})

test('without a data dir every start gets a new identity', async () => {
  const a = peerIdFromPrivateKey(await loadIdentity(undefined, quiet()))
  const b = peerIdFromPrivateKey(await loadIdentity('', quiet()))
  assert.notEqual(a.toString(), b.toString())
})

const validPem = (): string => generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
const unusableKeys: Array<[string, () => Buffer]> = [
  ['a truncated key', () => { const pem = validPem(); return Buffer.from(pem.slice(0, pem.length / 2)) }],
  ['a key cut inside its base64 body but with both PEM lines', () => Buffer.from(validPem().replace(/\n[A-Za-z0-9+/=]{8}/, '\n'))],
  ['an empty file', () => Buffer.alloc(0)],
  ['garbage bytes', () => randomBytes(512)],
  ['a P-256 key', () => Buffer.from(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }))],
  ['an RSA key', () => Buffer.from(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }))],
  ['an Ed25519 public key', () => Buffer.from(generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }))],
]

for (const [what, bytes] of unusableKeys) {
  test(`${what} in private.key is moved aside, kept byte for byte, and replaced by a new key`, async (t) => {
    const dir = await tempDir(t)
    const file = join(dir, privateKeyFile)
    const old = bytes()
    await writeFile(file, old, { mode: 0o600 })
    const { logger, lines } = capturingLogger()
    const before = Date.now()
    const first = peerIdFromPrivateKey(await loadIdentity(dir, logger))

    const moved = (await readdir(dir)).filter((f) => f.startsWith(`${privateKeyFile}.corrupt-`))
    assert.equal(moved.length, 1, `one moved-aside file in ${JSON.stringify(await readdir(dir))}`)
    const movedName = moved[0] as string
    const ms = Number(movedName.slice(`${privateKeyFile}.corrupt-`.length))
    assert.ok(ms >= before && ms <= Date.now(), `suffix ${movedName} is the unix time in ms`)
    assert.deepEqual(await readFile(join(dir, movedName)), old, 'the moved file keeps its old bytes')
    assert.deepEqual((await readdir(dir)).sort(), [privateKeyFile, movedName].sort())

    const warning = lines.find((l) => l.level === 'WARN')
    assert.ok(warning !== undefined, 'a warning is logged')
    assert.equal(warning.path, file)
    assert.equal(warning.movedTo, join(dir, movedName))
    assert.equal(typeof warning.reason, 'string')

    assert.match(await readFile(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/)
    assert.equal((await stat(file)).mode & 0o777, 0o600)
    const again = capturingLogger()
    const second = peerIdFromPrivateKey(await loadIdentity(dir, again.logger))
    assert.equal(second.toString(), first.toString(), 'the new key is persisted')
    assert.equal(again.lines.filter((l) => l.level === 'WARN').length, 0)
  })
}

test('a key file that cannot be read stays an IdentityError and is not moved', async (t) => {
  const dir = await tempDir(t)
  // A directory where the key should be: EISDIR, the same path as EACCES (which root cannot provoke with chmod).
  await mkdir(join(dir, privateKeyFile))
  await assert.rejects(loadIdentity(dir, quiet()), (err: Error) => err instanceof IdentityError && /cannot read .*private\.key: EISDIR/.test(err.message))
  assert.deepEqual(await readdir(dir), [privateKeyFile])
  if (process.getuid?.() !== 0) {
    await rm(join(dir, privateKeyFile), { recursive: true })
    await writeFile(join(dir, privateKeyFile), validPem(), { mode: 0o000 })
    await assert.rejects(loadIdentity(dir, quiet()), (err: Error) => err instanceof IdentityError && /EACCES/.test(err.message))
    assert.deepEqual(await readdir(dir), [privateKeyFile])
  }
})

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

const notWritable = (dataDir: string) => (err: Error): boolean => {
  assert.ok(err instanceof IdentityError, `IdentityError, got ${err.name}: ${err.message}`)
  assert.match(err.message, new RegExp(`^data dir ${escape(dataDir)} is not writable \\((EROFS|EACCES|EPERM)\\): `))
  assert.ok(err.message.includes(`mount a writable volume at ${dataDir}`))
  assert.ok(err.message.includes('unset --data-dir / DATA_DIR'))
  assert.ok(!err.message.includes('\n'), 'one line')
  return true
}

test('a read-only data dir, or one under a read-only parent, is an IdentityError saying what to do', async (t) => {
  const ro = await readOnlyDir(t)
  await assert.rejects(loadIdentity(ro, quiet()), notWritable(ro))
  // Node's recursive mkdir would say ENOENT here; the real reason is reported.
  await assert.rejects(loadIdentity(join(ro, 'data'), quiet()), notWritable(join(ro, 'data')))
  await assert.rejects(loadIdentity(join(ro, 'a', 'b'), quiet()), notWritable(join(ro, 'a', 'b')))
  assert.deepEqual(await readdir(ro), [])
})

test('a corrupt key in a read-only data dir is an IdentityError and the key is left in place', async (t) => {
  const ro = await readOnlyDir(t, async (dir) => { await writeFile(join(dir, privateKeyFile), 'not a key') })
  await assert.rejects(loadIdentity(ro, quiet()), notWritable(ro))
  assert.equal(await readFile(join(ro, privateKeyFile), 'utf8'), 'not a key')
})

test('a valid key in a read-only data dir is used', async (t) => {
  const pem = validPem()
  const ro = await readOnlyDir(t, async (dir) => { await writeFile(join(dir, privateKeyFile), pem, { mode: 0o600 }) })
  const a = peerIdFromPrivateKey(await loadIdentity(ro, quiet()))
  const b = peerIdFromPrivateKey(await loadIdentity(ro, quiet()))
  assert.equal(a.toString(), b.toString())
})

test('a data dir that is a file is an IdentityError saying so', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'file')
  await writeFile(file, 'x')
  for (const dataDir of [file, join(file, 'data')]) {
    await assert.rejects(loadIdentity(dataDir, quiet()), (err: Error) => err instanceof IdentityError &&
      err.message.startsWith(`data dir ${dataDir} is not a directory (`) && err.message.includes(`mount a writable volume at ${dataDir}`))
  }
  assert.equal(await readFile(file, 'utf8'), 'x')
})
