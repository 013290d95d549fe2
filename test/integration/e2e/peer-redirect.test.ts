// --peer-redirect with a real containerd: node 2's containerd asks its own mirror for each layer, gets 307 to node 1
// (which holds the image) and takes the layer from node 1 directly. The upstream serves no blob, node 2's daemon
// streams no layer itself (manifests still go through it), and node 1's daemon served them from its content store.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { CriImages } from '../../helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { metricSum } from '../../helpers/metrics.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { metricsPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../../helpers/spegel-cluster.ts'

describe('--peer-redirect: containerd follows the redirect to the holder', { timeout: 300_000 }, () => {
  let cluster: SpegelCluster
  let image: PushedImage
  before(async () => {
    requireNetnsSupport()
    cluster = await startSpegelCluster({ nodes: 2, prefix: 'redirect', daemonArgs: ['--peer-redirect=true'] })
    const built = await buildImage({ layers: [{ sizeBytes: 3 * 1024 * 1024 }, { sizeBytes: 2 * 1024 * 1024 }], tag: 'v1' })
    try {
      image = await pushLayout(built, cluster.upstreamHost, 'redirect/app', 'v1')
    } finally {
      await built.cleanup()
    }
  })
  after(async () => { await cluster?.stop() })

  it('node 2 pulls an image node 1 holds: every layer from node 1, none through node 2\'s daemon or from the upstream', async () => {
    const [n1, n2] = cluster.nodes as [SpegelNode, SpegelNode]
    await new CriImages(n1.containerd.socket).pull(image.ref)
    for (const c of image.children) await cluster.waitServable(n2, image.repository, 'blobs', c.digest, { timeoutMs: 30_000 })
    const metrics = async (n: SpegelNode): Promise<string> => await (await fetch(`http://${n.ip}:${metricsPort}/metrics`)).text()
    const servedBefore = metricSum(await metrics(n1), 'spegel_served_bytes_total', { source: 'local' })
    const upstreamBefore = cluster.upstream.blobBytesServed({ repository: image.repository })

    await new CriImages(n2.containerd.socket).pull(image.ref)
    await cluster.upstream.waitForQuiet({ quietMs: 500 })

    assert.equal(cluster.upstream.blobBytesServed({ repository: image.repository }) - upstreamBefore, 0, 'the upstream sent node 2 no blob')
    const held = await n2.contentDigests()
    for (const c of image.children) assert.ok(held.has(c.digest), `node 2 holds ${c.digest}`)
    const layers = image.children.filter((c) => c.mediaType.includes('layer'))
    const layerBytes = layers.reduce((n, l) => n + l.size, 0)
    const m2 = await metrics(n2)
    // Manifests still come through node 2's daemon (a few hundred bytes); no layer does.
    const proxied = metricSum(m2, 'spegel_served_bytes_total', { source: 'peer' })
    assert.ok(proxied < 64 * 1024, `node 2's daemon streamed no layer itself (${proxied} bytes through it)`)
    assert.ok(metricSum(m2, 'spegel_mirror_requests_total', { cache: 'hit' }) >= layers.length, 'node 2 counts the redirects as hits')
    const served = metricSum(await metrics(n1), 'spegel_served_bytes_total', { source: 'local' }) - servedBefore
    assert.ok(served >= layerBytes, `node 1 served the layers to node 2's containerd (${served} of ${layerBytes} bytes)`)
  })
})
