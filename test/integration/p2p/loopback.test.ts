// Two full daemons on one host (test/helpers/spegel-pair.ts): content imported on node A only is pulled by node B's
// containerd through B's mirror, which finds A in the DHT.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { makeImage, type ContainerdInstance, type TestImage } from '../../helpers/containerd.ts'
import { runSpegel, type SpegelRegistry } from '../../helpers/spegel.ts'
import { startSpegelPair, type SpegelPair } from '../../helpers/spegel-pair.ts'
import { waitFor } from '../../helpers/wait.ts'

describe('two daemons sharing content over the DHT (loopback)', { timeout: 180_000 }, () => {
  let b: ContainerdInstance
  let spegelB: SpegelRegistry
  let pair: SpegelPair | undefined
  let image: TestImage

  before(async () => {
    image = makeImage('registry.example.com/team/app:1.0', { layerSizes: [3_000_000, 1000] })
    pair = await startSpegelPair({ images: [image] })
    ;({ b, spegelB } = pair)
  })
  after(async () => { await pair?.stop() })

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
