import assert from 'node:assert/strict'
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { parse } from 'smol-toml'
import {
  cleanupMirrorConfiguration, InvalidHostsFileError, InvalidRegistryUrlError, MirrorTargetsRequiredError,
  writeMirrorConfiguration,
} from '../../../src/hosts/index.ts'
import type { BasicAuth } from '../../../src/hosts/index.ts'
import type { Logger } from '../../../src/log/index.ts'
import { snapshotTree, textFiles } from './tree.ts'
import type { TreeSnapshot } from './tree.ts'

// Golden tests of the hosts.toml writer. Each directory under test/fixtures/hosts/ is one case:
//   case.json  the options, plus `createConfigDir` (default true) and `emptyDirs` (empty directories of the result,
//              which git cannot hold)
//   before/    the configuration directory before the run (optional)
//   after/     the exact expected tree after the run: every file and directory, byte for byte
// Every case runs twice on the same directory and must give the same tree both times (restarts are idempotent).
// Regenerate after an intended format change with UPDATE_GOLDEN=1 and review the diff.

const fixturesDir = join(import.meta.dirname, '../../fixtures/hosts')
const update = process.env.UPDATE_GOLDEN === '1'

interface GoldenCase {
  description: string
  mirroredRegistries: string[]
  mirrorTargets: string[]
  resolveTags: boolean
  prependExisting: boolean
  basicAuth?: BasicAuth
  createConfigDir?: boolean
  emptyDirs?: string[]
}

async function makeTempDir (t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'spegel-hosts-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

const silentLogger: Pick<Logger, 'info' | 'warn'> = { info: () => {}, warn: () => {} }

async function expectedTree (caseDir: string, spec: GoldenCase): Promise<TreeSnapshot> {
  const afterDir = join(caseDir, 'after')
  const expected = existsSync(afterDir) ? await snapshotTree(afterDir) : {}
  for (const dir of spec.emptyDirs ?? []) {
    expected[dir] = { type: 'dir', mode: 0 }
  }
  return Object.fromEntries(Object.entries(expected).sort(([a], [b]) => (a < b ? -1 : 1)))
}

const caseNames = (await readdir(fixturesDir)).sort()

describe('writeMirrorConfiguration golden files', () => {
  test('the fixture directory holds the cases', () => {
    assert.ok(caseNames.length >= 18, `found ${caseNames.length} cases`)
  })

  for (const name of caseNames) {
    test(name, async (t) => {
      const caseDir = join(fixturesDir, name)
      const spec = JSON.parse(await readFile(join(caseDir, 'case.json'), 'utf8')) as GoldenCase
      const root = await makeTempDir(t)
      const configPath = join(root, 'etc', 'containerd', 'certs.d')
      if (existsSync(join(caseDir, 'before'))) {
        await cp(join(caseDir, 'before'), configPath, { recursive: true })
      } else if (spec.createConfigDir !== false) {
        await mkdir(configPath, { recursive: true })
      }
      const options = {
        configPath,
        mirroredRegistries: spec.mirroredRegistries,
        mirrorTargets: spec.mirrorTargets,
        resolveTags: spec.resolveTags,
        prependExisting: spec.prependExisting,
        basicAuth: spec.basicAuth,
        logger: silentLogger,
      }
      const written = await writeMirrorConfiguration(options)
      const first = await snapshotTree(configPath)

      if (update) {
        await rm(join(caseDir, 'after'), { recursive: true, force: true })
        await cp(configPath, join(caseDir, 'after'), { recursive: true })
      }
      const expected = await expectedTree(caseDir, spec)
      assert.deepEqual(textFiles(first), textFiles(expected), spec.description)
      assert.deepEqual(first, expected)

      // Written files: 0644 (no original to take the mode from in these cases... unless there was one) and valid for
      // containerd 1.6, which ignores a hosts.toml without at least one [host."…"] table.
      for (const file of written) {
        const original = join(configPath, '_backup', file.registry.host, 'hosts.toml')
        const expectedMode = existsSync(original) ? (await stat(original)).mode & 0o777 : 0o644
        assert.equal((await stat(file.path)).mode & 0o777, expectedMode, file.path)
        assert.equal((await stat(join(file.path, '..'))).mode & 0o777, 0o755)
        const document = parse(await readFile(file.path, 'utf8'))
        const hosts = document.host as Record<string, unknown> | undefined
        assert.ok(hosts !== undefined && Object.keys(hosts).length >= 1, `${file.path} has a [host] table`)
        const firstHost = Object.keys(hosts)[0] ?? ''
        assert.ok(firstHost.startsWith('http'), `${file.path}: our target comes first, got ${firstHost}`)
      }

      // A restart (init container run again) leaves exactly the same tree.
      await writeMirrorConfiguration(options)
      assert.deepEqual(await snapshotTree(configPath), first)
    })
  }
})

describe('writeMirrorConfiguration', () => {
  test('written hosts.toml parses to the intended structure', async (t) => {
    const configPath = await makeTempDir(t)
    await writeMirrorConfiguration({
      configPath,
      mirroredRegistries: ['https://docker.io'],
      mirrorTargets: ['http://10.0.0.5:30020', 'https://zot.example.com'],
      resolveTags: true,
      prependExisting: false,
      basicAuth: { username: 'hello', password: 'world' },
    })
    const document = parse(await readFile(join(configPath, 'docker.io', 'hosts.toml'), 'utf8'))
    assert.deepEqual(JSON.parse(JSON.stringify(document)), {
      server: 'https://registry-1.docker.io',
      host: {
        'http://10.0.0.5:30020': {
          capabilities: ['pull', 'resolve'],
          dial_timeout: '200ms',
          header: { Authorization: 'Basic aGVsbG86d29ybGQ=' },
        },
        'https://zot.example.com': {
          capabilities: ['pull', 'resolve'],
          dial_timeout: '200ms',
          header: { Authorization: 'Basic aGVsbG86d29ybGQ=' },
        },
      },
    })
  })

  test('keeps the mode of the original hosts.toml (0600 protects credentials)', async (t) => {
    for (const prependExisting of [false, true]) {
      const configPath = await makeTempDir(t)
      await mkdir(join(configPath, 'foo.bar:5000'))
      const original = join(configPath, 'foo.bar:5000', 'hosts.toml')
      await writeFile(original, "server = 'https://foo.bar:5000'\n\n[host.'https://mirror.example.com']\ncapabilities = ['pull']\n", { mode: 0o600 })
      await writeMirrorConfiguration({
        configPath,
        mirroredRegistries: ['https://foo.bar:5000'],
        mirrorTargets: ['http://127.0.0.1:5000'],
        resolveTags: true,
        prependExisting,
      })
      assert.equal((await stat(join(configPath, 'foo.bar:5000', 'hosts.toml'))).mode & 0o777, 0o600)
      assert.equal((await stat(join(configPath, '_backup', 'foo.bar:5000', 'hosts.toml'))).mode & 0o777, 0o600)
    }
  })

  test('new files are 0644 whatever the umask', async (t) => {
    const configPath = await makeTempDir(t)
    const previous = process.umask(0o077)
    try {
      await writeMirrorConfiguration({ configPath, mirroredRegistries: [], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: false })
    } finally {
      process.umask(previous)
    }
    assert.equal((await stat(join(configPath, '_default', 'hosts.toml'))).mode & 0o777, 0o644)
  })

  test('invalid URLs are rejected before the configuration directory is touched', async (t) => {
    const root = await makeTempDir(t)
    const configPath = join(root, 'certs.d')
    await assert.rejects(
      writeMirrorConfiguration({ configPath, mirroredRegistries: ['docker.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: false }),
      InvalidRegistryUrlError,
    )
    await assert.rejects(
      writeMirrorConfiguration({ configPath, mirroredRegistries: [], mirrorTargets: [], resolveTags: true, prependExisting: false }),
      MirrorTargetsRequiredError,
    )
    await assert.rejects(
      writeMirrorConfiguration({ configPath, mirroredRegistries: [], mirrorTargets: ['*'], resolveTags: true, prependExisting: false }),
      InvalidRegistryUrlError,
    )
    assert.equal(existsSync(configPath), false)
  })

  test('an unparsable existing hosts.toml fails the prepend and leaves the previous configuration in place', async (t) => {
    const configPath = await makeTempDir(t)
    const options = { configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true }
    // A first run without prepend installs our configuration over a broken original.
    await mkdir(join(configPath, 'docker.io'))
    await writeFile(join(configPath, 'docker.io', 'hosts.toml'), '[host."https://x"\ncapabilities = ')
    await writeMirrorConfiguration({ ...options, prependExisting: false })
    const before = await snapshotTree(configPath)
    const error = await writeMirrorConfiguration({ ...options, prependExisting: true }).then(() => undefined, (e: unknown) => e)
    assert.ok(error instanceof InvalidHostsFileError, String(error))
    assert.equal(error.path, join(configPath, '_backup', 'docker.io', 'hosts.toml'))
    assert.doesNotMatch(error.message, /\n/)
    assert.deepEqual(await snapshotTree(configPath), before)
  })

  test('logs what it backs up, prepends and writes', async (t) => {
    const configPath = await makeTempDir(t)
    await mkdir(join(configPath, 'docker.io'))
    await writeFile(join(configPath, 'docker.io', 'hosts.toml'), "server = 'https://other'\n[host.'http://10.0.0.5:30020']\n[host.'https://a']\n")
    const messages: string[] = []
    const logger: Pick<Logger, 'info' | 'warn'> = {
      info: (_obj, msg) => { messages.push(`info ${msg}`) },
      warn: (_obj, msg) => { messages.push(`warn ${msg}`) },
    }
    await writeMirrorConfiguration({ configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://10.0.0.5:30020'], resolveTags: true, prependExisting: true, logger })
    assert.deepEqual(messages, [
      'info backing up containerd host configuration',
      'warn existing host entry replaced by mirror target',
      'warn existing server setting replaced',
      'info prepending to existing containerd mirror configuration',
      'info added containerd mirror configuration',
    ])
  })

  test('honours an aborted signal before changing anything', async (t) => {
    const root = await makeTempDir(t)
    const configPath = join(root, 'certs.d')
    const controller = new AbortController()
    controller.abort()
    await assert.rejects(
      writeMirrorConfiguration({ configPath, mirroredRegistries: [], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: false, signal: controller.signal }),
      { name: 'AbortError' },
    )
    assert.equal(existsSync(configPath), false)
  })

  test('leaves no temporary files behind', async (t) => {
    const configPath = await makeTempDir(t)
    await writeMirrorConfiguration({ configPath, mirroredRegistries: ['https://docker.io', 'https://ghcr.io'], mirrorTargets: ['http://127.0.0.1:5000'], resolveTags: true, prependExisting: false })
    const names = Object.keys(await snapshotTree(configPath))
    assert.deepEqual(names, ['_backup', 'docker.io', 'docker.io/hosts.toml', 'ghcr.io', 'ghcr.io/hosts.toml'])
  })

  test('cleanup after a golden case restores the original tree', async (t) => {
    const configPath = await makeTempDir(t)
    await cp(join(fixturesDir, 'prepend-all-keys', 'before'), configPath, { recursive: true })
    const original = await snapshotTree(configPath, { metadata: true })
    await writeMirrorConfiguration({ configPath, mirroredRegistries: ['https://ghcr.io'], mirrorTargets: ['http://10.0.0.5:30020'], resolveTags: true, prependExisting: true })
    assert.equal(await cleanupMirrorConfiguration({ configPath }), true)
    assert.deepEqual(await snapshotTree(configPath, { metadata: true }), original)
  })
})
