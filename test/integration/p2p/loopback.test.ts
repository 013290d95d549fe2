// Two full daemons on one host (loopback addresses 127.0.0.2 and .3, same registry port as peers require), each with
// its own real containerd: content imported on node A only is pulled by node B's containerd through B's mirror,
// which finds A in the DHT. No network namespaces needed; the multi-node test covers real interfaces.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { makeImage, startContainerd, writeOciArchive, type ContainerdInstance, type TestImage } from '../../helpers/containerd.ts'
import { freePort } from '../../helpers/ports.ts'
import { waitFor } from '../../helpers/wait.ts'
import { runSpegel, startSpegelRegistry, type SpegelRegistry } from '../../helpers/spegel.ts'
import { requireKnownTool } from '../../helpers/tools.ts'

describe('two daemons sharing content over the DHT (loopback)', { timeout: 180_000 }, () => {
  let a: ContainerdInstance
  let b: ContainerdInstance
  let spegelA: SpegelRegistry
  let spegelB: SpegelRegistry
  let image: TestImage
  const env = { SPEGEL_ALLOW_LOOPBACK: 'true' }

  before(async () => {
    requireKnownTool('containerd')
    a = await startContainerd()
    b = await startContainerd()
    image = makeImage('registry.example.com/team/app:1.0', { layerSizes: [3_000_000, 1000] })
    const archive = join(a.dir, 'image.tar')
    await writeOciArchive(archive, [image])
    await a.ctr(['images', 'import', '--no-unpack', archive])
    const registryPort = await freePort()
    const routerPort = await freePort()
    spegelA = await startSpegelRegistry({ host: '127.0.0.2', registryPort, routerPort, containerdSocket: a.socket, contentPath: a.contentPath, env, args: ['--bootstrap-kind=static'] })
    spegelB = await startSpegelRegistry({
      host: '127.0.0.3', registryPort, routerPort, containerdSocket: b.socket, contentPath: b.contentPath, env,
      args: ['--bootstrap-kind=static', '--static-bootstrap-peers', `/ip4/127.0.0.2/tcp/${routerPort}`, '--mirror-resolve-timeout=2s'],
    })
  })
  after(async () => {
    await Promise.allSettled([spegelA?.stop(), spegelB?.stop()])
    await Promise.allSettled([a?.stop(), b?.stop()])
  })

  it('serves a blob B does not hold, from A', async () => {
    const layer = image.blobs.find((x) => x.size > 1_000_000)
    assert.ok(layer !== undefined)
    const body = await waitFor(async () => {
      const res = await fetch(`${spegelB.url}/v2/team/app/blobs/${layer.digest}?ns=registry.example.com`)
      if (res.status !== 200) { await res.body?.cancel(); return undefined }
      return Buffer.from(await res.arrayBuffer())
    }, { timeoutMs: 30_000, intervalMs: 250, what: 'blob served by B from A', context: () => spegelB.process.output() })
    assert.equal('sha256:' + createHash('sha256').update(body).digest('hex'), layer.digest)
  })

  it('lets containerd B pull the image by tag through its own mirror', async () => {
    await runSpegel(['configuration', `--containerd-registry-config-path=${b.configPath}`, '--mirrored-registries', 'https://registry.example.com', '--mirror-targets', spegelB.url])
    await b.ctr(['content', 'fetch', '--hosts-dir', b.configPath, image.name])
    const held = await b.ctr(['content', 'ls', '-q'])
    for (const blob of [image.top, ...image.blobs]) assert.ok(held.includes(blob.digest), blob.digest)
  })

  it('answers 404 quickly for content nobody has', async () => {
    const started = performance.now()
    const res = await fetch(`${spegelB.url}/v2/team/app/blobs/sha256:${'7'.repeat(64)}`)
    assert.equal(res.status, 404)
    assert.ok(performance.now() - started < 5000)
  })
})
