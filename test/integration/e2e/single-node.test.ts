// End to end on one node: containerd A pulls from a real upstream registry; `spegel registry` serves A's store;
// the upstream is stopped; containerd B, configured only by the hosts.toml `spegel configuration` wrote, pulls every
// image through A's mirror and ends up with exactly the same digests. skopeo then inspects and copies through it.
import assert from 'node:assert/strict'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { startContainerd, type ContainerdInstance } from '../../helpers/containerd.ts'
import { pushTestImages, type PushedImage, type TestImageSet } from '../../helpers/images.ts'
import { run } from '../../helpers/process.ts'
import { startRegistry, type RegistryHandle } from '../../helpers/registry.ts'
import { runSpegel, startSpegelRegistry, type SpegelRegistry } from '../../helpers/spegel.ts'
import { makeTempDir, type TempDir } from '../../helpers/tmp.ts'
import { requireKnownTool } from '../../helpers/tools.ts'

/** The ctr command that fetches each kind of test image with containerd 1.6 (see test/helpers/images.ts). */
function pullArgs (image: PushedImage, images: TestImageSet, hostsDir?: string): string[] {
  const hosts = hostsDir !== undefined ? ['--hosts-dir', hostsDir] : ['--plain-http']
  if (image === images.artifact) return ['content', 'fetch', ...hosts, image.ref]
  if (image === images.multiarch) return ['images', 'pull', ...hosts, '--all-platforms', image.ref]
  return ['images', 'pull', ...hosts, image.ref]
}

/** Digests of every blob in a containerd content store. */
async function contentDigests (node: ContainerdInstance): Promise<Set<string>> {
  const out = await node.ctr(['content', 'ls', '-q'])
  return new Set(out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('sha256:')))
}

async function imageDigest (node: ContainerdInstance, ref: string): Promise<string | undefined> {
  const out = await node.ctr(['images', 'ls'])
  for (const line of out.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/)
    if (cols[0] === ref) return cols[2]
  }
  return undefined
}

describe('single node mirror with real containerd', { timeout: 300_000 }, () => {
  let upstream: RegistryHandle
  let images: TestImageSet
  let a: ContainerdInstance
  let b: ContainerdInstance
  let spegel: SpegelRegistry
  let tmp: TempDir

  before(async () => {
    for (const tool of ['containerd', 'ctr', 'skopeo', 'docker-registry'] as const) requireKnownTool(tool)
    tmp = await makeTempDir('spegel-e2e')
    upstream = await startRegistry()
    images = await pushTestImages(upstream.host)
    a = await startContainerd()
    b = await startContainerd()
    for (const image of images.all) await a.ctr(pullArgs(image, images))
    spegel = await startSpegelRegistry({ containerdSocket: a.socket, contentPath: a.contentPath, args: ['--bootstrap-kind=static'] })
  })

  after(async () => {
    await spegel?.stop()
    await Promise.allSettled([a?.stop(), b?.stop(), upstream?.stop()])
    await tmp?.cleanup()
  })

  it('writes hosts.toml for the upstream that names this node\'s mirror', async () => {
    await runSpegel([
      'configuration', `--containerd-registry-config-path=${b.configPath}`,
      '--mirrored-registries', upstream.url, '--mirror-targets', spegel.url, '--resolve-tags=true',
    ])
    const dirs = (await readdir(b.configPath)).sort()
    assert.deepEqual(dirs, ['_backup', upstream.host].sort())
    const toml = await readFile(join(b.configPath, upstream.host, 'hosts.toml'), 'utf8')
    assert.equal(toml, [
      `server = '${upstream.url}'`,
      '',
      `[host.'${spegel.url}']`,
      "capabilities = ['pull', 'resolve']",
      "dial_timeout = '200ms'",
    ].join('\n'))
  })

  it('pulls every image on node B through A\'s mirror with the upstream stopped', async () => {
    await upstream.stop()
    for (const image of images.all) {
      await b.ctr(pullArgs(image, images, b.configPath))
      assert.equal(await imageDigest(b, image.ref), image.digest, `image record of ${image.ref}`)
    }
    const held = await contentDigests(b)
    for (const image of images.all) {
      assert.ok(held.has(image.digest), `${image.ref} top digest`)
      for (const child of image.children) assert.ok(held.has(child.digest), `${image.ref} child ${child.digest} (${child.mediaType})`)
    }
  })

  it('serves skopeo inspect and copy through the mirror', async () => {
    const inspect = await run('skopeo', ['--insecure-policy', 'inspect', '--raw', '--tls-verify=false', `docker://${spegel.host}/${images.layers.repository}:${images.layers.tag}`])
    const manifest = JSON.parse(inspect.stdout) as { layers: Array<{ digest: string }> }
    assert.deepEqual(manifest.layers.map((l) => l.digest), images.layers.manifests[0]?.layers.map((l) => l.digest))
    const dest = join(tmp.path, 'copy')
    await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', '--preserve-digests', `docker://${spegel.host}/${images.docker.repository}@${images.docker.digest}`, `dir:${dest}`])
    const copied = new Set(await readdir(dest))
    for (const child of images.docker.children) assert.ok(copied.has(child.digest.slice('sha256:'.length)), `copied ${child.digest}`)
  })

  it('answers 404 for content it does not hold, so containerd falls back', async () => {
    const res = await fetch(`${spegel.url}/v2/test/layers/blobs/sha256:${'0'.repeat(64)}?ns=${encodeURIComponent(upstream.host)}`)
    assert.equal(res.status, 404)
    assert.equal((await res.json() as { errors: Array<{ code: string }> }).errors[0]?.code, 'BLOB_UNKNOWN')
  })
})
