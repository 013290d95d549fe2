import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readdir, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { BackupConflictError, cleanupMirrorConfiguration, writeMirrorConfiguration } from '../../../src/hosts/index.ts'
import type { Logger } from '../../../src/log/index.ts'
import { snapshotTree } from './tree.ts'

async function makeTempDir (t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spegel-cleanup-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** A configuration directory with everything a user might have: nested dirs, certs, symlinks, odd modes, binary data. */
async function buildUserTree (configPath: string): Promise<void> {
  await mkdir(join(configPath, 'docker.io'), { recursive: true })
  await writeFile(join(configPath, 'docker.io', 'hosts.toml'), 'server = "https://registry-1.docker.io"\n\n[host."https://mirror.example.com"]\n  capabilities = ["pull"]\n  ca = "ca.pem"\n')
  await writeFile(join(configPath, 'docker.io', 'ca.pem'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n')
  await mkdir(join(configPath, 'docker.io', 'nested', 'deeper'), { recursive: true })
  await writeFile(join(configPath, 'docker.io', 'nested', 'deeper', 'client.key'), 'secret', { mode: 0o600 })
  await chmod(join(configPath, 'docker.io', 'nested', 'deeper', 'client.key'), 0o600)
  await chmod(join(configPath, 'docker.io', 'nested'), 0o700)
  await symlink('ca.pem', join(configPath, 'docker.io', 'link-to-ca.pem'))
  await symlink('/nonexistent/dangling', join(configPath, 'docker.io', 'dangling'))
  await mkdir(join(configPath, 'registry.internal:8443'))
  await writeFile(join(configPath, 'registry.internal:8443', 'hosts.toml'), Buffer.from([0x73, 0x65, 0x72, 0x00, 0xff, 0xfe, 0x0a]))
  await mkdir(join(configPath, 'empty-dir'))
  await writeFile(join(configPath, 'stray-file.txt'), 'no trailing newline')
  await symlink('docker.io', join(configPath, 'index.docker.io'))
  // Distinct times make the restore check see a copy (which would get new times) versus a move.
  const past = new Date('2020-01-02T03:04:05Z')
  await utimes(join(configPath, 'docker.io', 'ca.pem'), past, past)
  await utimes(join(configPath, 'stray-file.txt'), past, past)
}

const write = async (configPath: string, prependExisting: boolean, mirroredRegistries: string[] = ['https://docker.io', 'http://foo.bar:5000']): Promise<void> => {
  await writeMirrorConfiguration({ configPath, mirroredRegistries, mirrorTargets: ['http://10.0.0.5:30020'], resolveTags: true, prependExisting })
}

describe('cleanupMirrorConfiguration', () => {
  for (const prependExisting of [false, true]) {
    test(`restores an arbitrary tree byte for byte and is idempotent (prepend ${prependExisting})`, async (t) => {
      const configPath = join(await makeTempDir(t), 'certs.d')
      await buildUserTree(configPath)
      const original = await snapshotTree(configPath, { metadata: true })
      await write(configPath, prependExisting)
      await write(configPath, prependExisting)
      assert.notDeepEqual(await snapshotTree(configPath, { metadata: true }), original)

      assert.equal(await cleanupMirrorConfiguration({ configPath }), true)
      assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
      assert.equal(await cleanupMirrorConfiguration({ configPath }), false)
      assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
    })
  }

  test('restores an originally empty directory to empty', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await write(configPath, false, [])
    assert.equal(await cleanupMirrorConfiguration({ configPath }), true)
    assert.deepEqual(await snapshotTree(configPath), {})
  })

  test("Spegel's case: everything but the backup is removed, the backup moved back, twice", async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await mkdir(join(configPath, '_backup'), { recursive: true })
    await writeFile(join(configPath, '_backup', 'data.txt'), 'hello world')
    await writeFile(join(configPath, 'foo.bin'), 'hello world')
    await mkdir(join(configPath, 'docker.io'))
    for (let i = 0; i < 2; i++) {
      await cleanupMirrorConfiguration({ configPath })
      assert.deepEqual(await snapshotTree(configPath), { 'data.txt': { type: 'file', mode: 0, content: Buffer.from('hello world').toString('hex') } })
    }
  })

  test('without a backup nothing changes', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await buildUserTree(configPath)
    const original = await snapshotTree(configPath, { metadata: true })
    const messages: string[] = []
    const logger: Pick<Logger, 'info' | 'warn'> = { info: (_o, msg) => { messages.push(msg) }, warn: (_o, msg) => { messages.push(msg) } }
    assert.equal(await cleanupMirrorConfiguration({ configPath, logger }), false)
    assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
    assert.deepEqual(messages, ['skipping cleanup because backup directory does not exist'])
  })

  test('a missing configuration directory is a no-op and is not created', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    assert.equal(await cleanupMirrorConfiguration({ configPath }), false)
    assert.equal(existsSync(configPath), false)
  })

  test('finishes a restore interrupted after some entries moved back', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await buildUserTree(configPath)
    const original = await snapshotTree(configPath, { metadata: true })
    await write(configPath, true)
    // State of a crash in the middle of cleanup: ours deleted (everything outside _backup), _backup renamed, one entry
    // already moved back.
    for (const name of await readdir(configPath)) {
      if (name !== '_backup') await rm(join(configPath, name), { recursive: true })
    }
    await rename(join(configPath, '_backup'), join(configPath, '_backup.restoring'))
    await rename(join(configPath, '_backup.restoring', 'docker.io'), join(configPath, 'docker.io'))

    assert.equal(await cleanupMirrorConfiguration({ configPath }), false)
    assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
  })

  test('a writer run after an interrupted restore finishes it first, so nothing of the user is lost', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await buildUserTree(configPath)
    const original = await snapshotTree(configPath, { metadata: true })
    await write(configPath, false)
    for (const name of await readdir(configPath)) {
      if (name !== '_backup') await rm(join(configPath, name), { recursive: true })
    }
    await rename(join(configPath, '_backup'), join(configPath, '_backup.restoring'))
    await rename(join(configPath, '_backup.restoring', 'stray-file.txt'), join(configPath, 'stray-file.txt'))

    await write(configPath, false)
    assert.equal(await cleanupMirrorConfiguration({ configPath }), true)
    assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
  })

  test('a writer run after an interrupted backup keeps every user entry', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await buildUserTree(configPath)
    const original = await snapshotTree(configPath, { metadata: true })
    // State of a crash while backing up: some entries moved into _backup.partial, the rest still outside.
    await mkdir(join(configPath, '_backup.partial'))
    await rename(join(configPath, 'docker.io'), join(configPath, '_backup.partial', 'docker.io'))

    await write(configPath, true)
    assert.equal(existsSync(join(configPath, '_backup.partial')), false)
    assert.deepEqual(Object.keys(await snapshotTree(join(configPath, '_backup'))).filter((name) => !name.includes('/')).sort(),
      ['docker.io', 'empty-dir', 'index.docker.io', 'registry.internal:8443', 'stray-file.txt'])
    assert.equal(await cleanupMirrorConfiguration({ configPath }), true)
    assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
  })

  test('cleanup after an interrupted backup puts the user entries back', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await buildUserTree(configPath)
    const original = await snapshotTree(configPath, { metadata: true })
    await mkdir(join(configPath, '_backup.partial'))
    await rename(join(configPath, 'stray-file.txt'), join(configPath, '_backup.partial', 'stray-file.txt'))
    assert.equal(await cleanupMirrorConfiguration({ configPath }), false)
    assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
  })

  test('refuses to overwrite when an entry exists both in the backup being restored and outside it', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await mkdir(join(configPath, '_backup.restoring', 'docker.io'), { recursive: true })
    await writeFile(join(configPath, '_backup.restoring', 'docker.io', 'hosts.toml'), 'a')
    await mkdir(join(configPath, 'docker.io'))
    await writeFile(join(configPath, 'docker.io', 'hosts.toml'), 'b')
    const before = await snapshotTree(configPath)
    await assert.rejects(cleanupMirrorConfiguration({ configPath }), BackupConflictError)
    assert.deepEqual(await snapshotTree(configPath), before)
  })

  test('_backup as a file is refused, not deleted', async (t) => {
    const configPath = join(await makeTempDir(t), 'certs.d')
    await mkdir(configPath)
    await writeFile(join(configPath, '_backup'), 'not a directory')
    await assert.rejects(cleanupMirrorConfiguration({ configPath }), BackupConflictError)
    await assert.rejects(write(configPath, false), BackupConflictError)
    assert.deepEqual(Object.keys(await snapshotTree(configPath)), ['_backup'])
  })
})
