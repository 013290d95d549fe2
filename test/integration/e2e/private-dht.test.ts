// Issue 18: "only members join the DHT". Three network-namespace nodes with real containerd; nodes 1 and 2 run with
// --router-psk-file (one swarm key), node 3 is an outsider: its daemon runs without the key (an open DHT node, as any
// pod could start) and bootstraps from node 1. Node 3 pulls an image and advertises it; node 2 then pulls the same
// image through its mirror with CRI PullImage. The outsider must not have joined (no member lists it as a peer, and
// its /readyz stays 503), and node 2 must have found no provider in node 3: every blob comes from the upstream.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { formatSwarmKey } from '../../../src/routing/psk.ts'
import { criPull } from '../../helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { metricsPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../../helpers/spegel-cluster.ts'
import { makeTempDir, type TempDir } from '../../helpers/tmp.ts'

const MiB = 1024 * 1024

async function peersOf (node: SpegelNode): Promise<string[]> {
  const status = await (await fetch(`http://${node.ip}:${metricsPort}/debug/web/status.json`)).json() as { peers: Array<{ id: string }> }
  return status.peers.map((p) => p.id)
}

describe('a private DHT on nodes with real containerd (--router-psk-file)', { timeout: 300_000 }, () => {
  let cluster: SpegelCluster
  let tmp: TempDir
  let image: PushedImage
  before(async () => {
    requireNetnsSupport()
    tmp = await makeTempDir('spegel-psk-e2e')
    const keyFile = join(tmp.path, 'swarm.key')
    await writeFile(keyFile, formatSwarmKey(randomBytes(32)))
    cluster = await startSpegelCluster({ nodes: 3, prefix: 'spgpsk', daemonArgs: [`--router-psk-file=${keyFile}`] })
    const n3 = cluster.nodes[2] as SpegelNode
    await n3.stopDaemon()
    await n3.startDaemon({ daemonArgs: [], expectReady: false })
    const built = await buildImage({ layers: [{ sizeBytes: 2 * MiB }], tag: 'v1' })
    try {
      image = await pushLayout(built, cluster.upstreamHost, 'psk/app', 'v1')
    } finally {
      await built.cleanup()
    }
  })
  after(async () => {
    await cluster?.stop()
    await tmp?.cleanup()
  })

  it('an outsider without the key cannot join, and the image it holds is never served to members', async () => {
    const [n1, n2, n3] = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
    await criPull(n3.containerd.socket, image.ref, 120_000)
    assert.equal(await n3.imageDigest(image.ref), image.digest, 'the outsider holds the image')
    // Its advertisements had time to go wherever they could (a few of the members' 100 ms debounces and publishes).
    await new Promise((resolve) => setTimeout(resolve, 3_000))
    await cluster.upstream.waitForQuiet()
    cluster.upstream.resetAccessLog()
    await criPull(n2.containerd.socket, image.ref, 120_000)
    await cluster.upstream.waitForQuiet()
    const layer = image.children.find((c) => c.size >= 2 * MiB)
    assert.ok(layer !== undefined)
    assert.ok(cluster.upstream.blobBytesServed({ repository: image.repository, digest: layer.digest }) >= layer.size, 'node 2 took the layer from the upstream, not from the outsider')
    for (const member of [n1, n2]) {
      assert.ok(!(await peersOf(member)).includes(n3.peerId ?? ''), `${member.name} does not list the outsider as a peer`)
    }
    assert.deepEqual(await peersOf(n3), [], 'the outsider has no peer')
    const ready = await fetch(`${n3.mirrorUrl}/readyz`)
    assert.equal(ready.status, 503, 'the outsider cannot join: not ready')
    assert.ok((await peersOf(n1)).includes(n2.peerId ?? ''), 'the members see each other')
  })
})
