import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { cleanupWait, runCleanup } from '../../../src/cleanup/index.ts'
import { writeMirrorConfiguration } from '../../../src/hosts/index.ts'
import { freePort } from '../../helpers/ports.ts'

test('runCleanup restores the configuration, then reports ready until aborted', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'spegel-run-cleanup-'))
  t.after(async () => { await rm(root, { recursive: true, force: true }) })
  const configPath = join(root, 'certs.d')
  await mkdir(join(configPath, 'docker.io'), { recursive: true })
  await writeFile(join(configPath, 'docker.io', 'hosts.toml'), 'original')
  await writeMirrorConfiguration({ configPath, mirroredRegistries: ['https://docker.io'], mirrorTargets: ['http://10.0.0.5:30020'], resolveTags: true, prependExisting: false })
  assert.notEqual(await readFile(join(configPath, 'docker.io', 'hosts.toml'), 'utf8'), 'original')

  const port = await freePort()
  const controller = new AbortController()
  t.after(() => { controller.abort() })
  const running = runCleanup({ configPath, addr: `127.0.0.1:${port}`, signal: controller.signal })
  // The wait pod's view: ready only once restored.
  await cleanupWait({ probeEndpoint: `127.0.0.1:${port}`, threshold: 2, periodMs: 20, signal: AbortSignal.timeout(5000) })
  assert.equal(await readFile(join(configPath, 'docker.io', 'hosts.toml'), 'utf8'), 'original')
  assert.equal(existsSync(join(configPath, '_backup')), false)

  controller.abort()
  await running
  await assert.rejects(cleanupWait({ probeEndpoint: `127.0.0.1:${port}`, threshold: 1, periodMs: 20, signal: AbortSignal.timeout(200) }), { name: 'TimeoutError' })
})
