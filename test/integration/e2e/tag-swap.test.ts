// Issue 18: "nobody swaps the image behind a tag". Three network-namespace nodes with real containerd; the upstream (a
// real docker-registry) holds image A as swap/app:v1. Node 3 is the intruder: it imports an image B of its own under
// the same name, and its daemon advertises that tag in the DHT. Node 1 then pulls swap/app:v1 through its mirror with
// CRI PullImage. With --confirm-tags (the default) node 1's mirror asks the upstream which digest the tag names, sees
// that node 3's answer differs, answers 404, and containerd resolves the tag upstream: node 1 runs A. Node 2, whose
// daemon runs with --confirm-tags=false (Spegel's behaviour), shows what the check prevents: it gets B.
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { makeImage, writeOciArchive } from '../../helpers/containerd.ts'
import { criPull } from '../../helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { metricsPort, startSpegelCluster, type SpegelCluster } from '../../helpers/spegel-cluster.ts'

const MiB = 1024 * 1024

describe('a tag answered by a peer with an image of its own', { timeout: 300_000 }, () => {
  let cluster: SpegelCluster
  let upstreamImage: PushedImage
  let intruderDigest: string
  before(async () => {
    requireNetnsSupport()
    cluster = await startSpegelCluster({ nodes: 3, prefix: 'tagswap' })
    const built = await buildImage({ layers: [{ sizeBytes: 1 * MiB }], tag: 'v1' })
    try {
      upstreamImage = await pushLayout(built, cluster.upstreamHost, 'swap/app', 'v1')
    } finally {
      await built.cleanup()
    }
    const [, n2, n3] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0], typeof cluster.nodes[0]]
    const intruder = makeImage(`${cluster.upstreamHost}/swap/app:v1`, { layerSizes: [300_000] })
    intruderDigest = intruder.top.digest
    assert.notEqual(intruderDigest, upstreamImage.digest)
    const archive = join(n3.containerd.dir, 'intruder.tar')
    await writeOciArchive(archive, [intruder])
    await n3.ctr(['images', 'import', archive])
    // Node 2 as Spegel runs: peers' tags taken as they come. Once its mirror answers the tag (with the intruder's
    // image), the intruder's record has reached every node (a cluster smaller than k gets every record directly).
    await n2.stopDaemon()
    await n2.startDaemon({ daemonArgs: ['--confirm-tags=false'] })
    await cluster.waitServable(n2, 'swap/app', 'manifests', 'v1')
  })
  after(async () => { await cluster?.stop() })

  it('with --confirm-tags (the default), node 1 runs the upstream\'s image; the intruder\'s answer is counted as differs', async () => {
    const n1 = cluster.nodes[0]!
    await criPull(n1.containerd.socket, upstreamImage.ref, 120_000)
    assert.equal(await n1.imageDigest(upstreamImage.ref), upstreamImage.digest, 'node 1 holds the upstream\'s image under the tag')
    const metrics = await (await fetch(`http://${n1.ip}:${metricsPort}/metrics`)).text()
    assert.match(metrics, /^spegel_tag_confirmations_total\{outcome="differs"\} [1-9]/m, 'node 1 asked the intruder and refused its answer')
  })

  it('with --confirm-tags=false (Spegel\'s way), node 2 runs the intruder\'s image: what the check prevents', async () => {
    const n2 = cluster.nodes[1]!
    await criPull(n2.containerd.socket, upstreamImage.ref, 120_000)
    assert.equal(await n2.imageDigest(upstreamImage.ref), intruderDigest, 'node 2 took the intruder\'s digest for the tag')
  })
})
