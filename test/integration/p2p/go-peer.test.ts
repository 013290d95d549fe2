// Issue 9: a Go libp2p node in the same DHT as spegel-ts. Three spegel-ts nodes (network namespaces, containerd,
// production ports) and, in a fourth namespace on the same bridge, the Go peer of test/go/dhtpeer (go-libp2p +
// go-libp2p-kad-dht with the settings of Spegel's router) beside a docker-registry on port 5000, as a Go Spegel
// node serves its containerd content there. Checked both ways, with a static bootstrap address carrying the peer id
// and with the id-less addresses Spegel's DNS bootstrap produces:
// - the Go peer finds, as providers, the spegel-ts node that holds an image (its digests and its tag);
// - spegel-ts nodes fetch content from the holder the Go peer announces.
// Beside the end-to-end results, each DHT message is checked on its own through the Go peer: ADD_PROVIDER both ways
// (the record lands in the other side's store with an address) and GET_PROVIDERS both ways (the answer names the
// holder with an address, which is all a Go Spegel uses to fetch).
// About 15 s. DHTPEER_LOG=FILE keeps the Go peer's output there, with go-libp2p's own logs at GOLOG_LOG_LEVEL (warn).
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { requireGoDhtPeer, startGoDhtPeer, type GoDhtPeer, type GoPeerInfo } from '../../helpers/go-dht-peer.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { addClusterMember, type ExtraMember } from '../../helpers/netns-member.ts'
import { waitFor } from '../../helpers/wait.ts'
import { startRegistry, type RegistryHandle } from '../../helpers/registry.ts'
import { registryPort, routerPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../../helpers/spegel-cluster.ts'

const controlPort = 5080

/** The routing keys of an image as Spegel advertises them: its tag and every digest. */
function keysOf (image: PushedImage, registryHost: string): string[] {
  return [`${registryHost}/${image.repository}:${image.tag}`, image.digest, ...image.children.map((c) => c.digest)]
}

/** Pushes one new image to each registry (the same digests everywhere); returns it as pushed to the first. */
async function push (registryHosts: readonly string[], repository: string, layerSizes: number[]): Promise<PushedImage> {
  const built = await buildImage({ layers: layerSizes.map((sizeBytes) => ({ sizeBytes })), tag: 'v1' })
  try {
    const pushed = await Promise.all(registryHosts.map(async (host) => await pushLayout(built, host, repository, 'v1')))
    return pushed[0]!
  } finally {
    await built.cleanup()
  }
}

function describePeers (peers: GoPeerInfo[]): string {
  return JSON.stringify(peers.map((p) => `${p.id}@${p.ips.join(',')}`))
}

describe('a Go libp2p node (go-libp2p-kad-dht, Spegel\'s settings) in the spegel-ts DHT', { timeout: 120_000 }, () => {
  let cluster: SpegelCluster | undefined
  let goNet: ExtraMember | undefined
  let goRegistry: RegistryHandle | undefined
  let go: GoDhtPeer | undefined
  let n1: SpegelNode
  let n2: SpegelNode
  let n3: SpegelNode
  /** On the upstream; pulled into node 2's containerd. */
  let held: PushedImage
  /** Only on the Go peer's registry, announced by the first Go peer. */
  let fromGo: PushedImage
  /** Only on the Go peer's registry, announced by the second Go peer. */
  let fromGoDns: PushedImage
  /** Only on the Go peer's registry, recorded by the first Go peer in its own store and never published. */
  let localOnly: PushedImage

  const startGo = async (bootstrap: string[], provide: string[] = []): Promise<GoDhtPeer> => {
    assert.ok(goNet !== undefined)
    go = await startGoDhtPeer({
      netns: goNet.netns,
      listen: `${goNet.ip}:${routerPort}`,
      control: `${goNet.ip}:${controlPort}`,
      bootstrap,
      provide,
      ...(process.env.DHTPEER_LOG !== undefined ? { logFile: process.env.DHTPEER_LOG, env: { GOLOG_LOG_LEVEL: process.env.GOLOG_LOG_LEVEL ?? 'warn' } } : {}),
    })
    return go
  }

  /** Waits until the Go peer's query for `key` names `node` (with its IP) among the providers; returns them all. */
  const waitGoFinds = async (key: string, node: SpegelNode): Promise<GoPeerInfo[]> => {
    assert.ok(go !== undefined)
    const peer = go
    let last: GoPeerInfo[] = []
    return await waitFor(async () => {
      last = await peer.findProviders(key, { timeoutMs: 5_000 })
      return last.some((p) => p.id === node.peerId && p.ips.includes(node.ip)) ? last : undefined
    }, { timeoutMs: 20_000, intervalMs: 250, what: `the Go peer to find ${node.name} (${node.peerId}) providing ${key}`, context: () => `last answer: ${describePeers(last)}` })
  }

  before(async () => {
    requireNetnsSupport()
    requireGoDhtPeer()
    // A generous resolve timeout: on a loaded 2-core machine a first DHT lookup can take longer than the default.
    cluster = await startSpegelCluster({ nodes: 3, prefix: 'spggo', logLevel: 'DEBUG', daemonArgs: ['--mirror-resolve-timeout=2s'] })
    ;[n1, n2, n3] = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
    goNet = await addClusterMember(cluster.net, 'go', 50)
    goRegistry = await startRegistry({ host: goNet.ip, port: registryPort, netns: goNet.netns })
    held = await push([cluster.upstreamHost], 'interop/held', [300_000, 100_000])
    // The Go peer's host serves these as a Spegel node would. The upstream has the two pulled by tag as well: a tag
    // resolved by peers is confirmed with the upstream (--confirm-tags); their bytes must still come from the Go peer.
    fromGo = await push([goRegistry.host, cluster.upstreamHost], 'interop/from-go', [1_000_000, 200_000])
    fromGoDns = await push([goRegistry.host, cluster.upstreamHost], 'interop/from-go-dns', [500_000])
    localOnly = await push([goRegistry.host], 'interop/local-only', [700_000])
    cluster.upstream.resetAccessLog()
    goRegistry.resetAccessLog()
  })

  after(async () => {
    await go?.stop().catch(() => {})
    await goRegistry?.stop().catch(() => {})
    await cluster?.stop()
    await goNet?.remove()
  })

  describe('bootstrapped from a multiaddr with /p2p/<id>', () => {
    it('joins through node 1 and has every spegel-ts node in its routing table', async () => {
      assert.ok(n1.peerId !== undefined)
      const peer = await startGo([`${n1.routerAddr}/p2p/${n1.peerId}`])
      await peer.waitReady()
      const want = [n1, n2, n3].map((n) => n.peerId ?? '')
      await waitFor(async () => {
        const ids = (await peer.peers()).map((p) => p.id)
        return want.every((id) => ids.includes(id))
      }, { timeoutMs: 20_000, intervalMs: 250, what: `the Go peer's routing table to hold ${want.join(', ')}` })
      assert.match(peer.id, /^12D3KooW/)
    })

    it('finds node 2 as the provider of every digest and the tag of an image node 2 pulled', async () => {
      const peer = go!
      const since = n2.logs().length
      await n2.pull(held.ref)
      await waitFor(() => n2.logs().slice(since).some((r) => r.msg === 'advertisements updated'), { timeoutMs: 30_000, what: 'node 2 to advertise' })
      const keys = keysOf(held, cluster!.upstreamHost)
      for (const key of keys) {
        // The whole query, as Spegel's Lookup runs it.
        const providers = await waitGoFinds(key, n2)
        // Nobody else holds it: not node 1 or 3, and not the Go peer itself (its own records are skipped, as in Spegel).
        assert.deepEqual(providers.map((p) => p.id), [n2.peerId], `providers of ${key}: ${describePeers(providers)}`)
      }
      // On the wire, message by message. ADD_PROVIDER from spegel-ts to Go: node 2 published to the Go peer (one of its
      // k closest), with an address (Go drops records without one).
      for (const key of keys) {
        const local = await waitFor(async () => {
          const list = await peer.localProviders(key)
          return list.some((p) => p.id === n2.peerId) ? list : undefined
        }, { timeoutMs: 10_000, intervalMs: 200, what: `node 2's provider record for ${key} in the Go peer's store` })
        assert.deepEqual(local.map((p) => [p.id, p.ips]), [[n2.peerId, [n2.ip]]], `the Go peer's record of ${key}`)
      }
      // GET_PROVIDERS from Go to each spegel-ts node: every node names node 2 with its address, which is all a Go
      // Spegel needs to fetch from it (it uses the addresses of the answer, not its peer store).
      for (const node of [n1, n2, n3]) {
        const answer = await peer.getProviders(held.digest, node.peerId!)
        assert.deepEqual(answer.providers.map((p) => [p.id, p.ips]), [[n2.peerId, [n2.ip]]], `${node.name} answers GET_PROVIDERS`)
        assert.ok(answer.providers[0]!.addrs.includes(`/ip4/${n2.ip}/tcp/${routerPort}`), `${node.name} sends node 2's router address`)
      }
    })

    it('is the holder a spegel-ts node fetches from when the Go peer provides content', async () => {
      const peer = go!
      const keys = keysOf(fromGo, cluster!.upstreamHost)
      await peer.provide(keys)
      // ADD_PROVIDER from Go (Spegel's SweepingProvider) to spegel-ts: every node stored the Go peer's record with its
      // address, and answers GET_PROVIDERS with it.
      for (const node of [n1, n2, n3]) {
        for (const key of keys) {
          const answer = await waitFor(async () => {
            const a = await peer.getProviders(key, node.peerId!)
            return a.providers.length > 0 ? a : undefined
          }, { timeoutMs: 15_000, intervalMs: 200, what: `${node.name} to store the Go peer's record of ${key}` })
          assert.deepEqual(answer.providers.map((p) => [p.id, p.ips]), [[peer.id, [goNet!.ip]]], `${node.name}'s record of ${key}`)
        }
      }
      // Through node 3's mirror, as containerd asks it: `ns` names the upstream, which confirms the tag; every blob
      // comes from the Go peer's registry, none from the upstream.
      const ns = encodeURIComponent(cluster!.upstreamHost)
      await cluster!.waitServable(n3, fromGo.repository, 'manifests', 'v1')
      const manifest = await fetch(`${n3.mirrorUrl}/v2/${fromGo.repository}/manifests/v1?ns=${ns}`, { headers: { accept: fromGo.mediaType } })
      assert.equal(manifest.status, 200)
      assert.equal(manifest.headers.get('docker-content-digest'), fromGo.digest)
      assert.equal('sha256:' + createHash('sha256').update(Buffer.from(await manifest.arrayBuffer())).digest('hex'), fromGo.digest)
      for (const blob of fromGo.children) {
        const res = await fetch(`${n3.mirrorUrl}/v2/${fromGo.repository}/blobs/${blob.digest}?ns=${ns}`)
        assert.equal(res.status, 200, blob.digest)
        const body = Buffer.from(await res.arrayBuffer())
        assert.equal(body.length, blob.size)
        assert.equal('sha256:' + createHash('sha256').update(body).digest('hex'), blob.digest)
      }
      await goRegistry!.waitForQuiet()
      const fromN3 = goRegistry!.accessLog().filter((e) => e.method === 'GET' && e.remoteAddr.startsWith(`${n3.ip}:`))
      for (const blob of fromGo.children) {
        assert.ok(fromN3.some((e) => e.path === `/v2/${fromGo.repository}/blobs/${blob.digest}` && e.status === 200), `node 3 fetched ${blob.digest} from the Go peer's registry`)
      }
      assert.ok(n3.logs().some((r) => r.msg === 'served from peer' && r.peer === peer.id), 'node 3 logged content served from the Go peer')
      await cluster!.upstream.waitForQuiet()
      assert.equal(cluster!.upstream.blobBytesServed({ repository: fromGo.repository }), 0, 'the upstream sent no blob')
    })
    it('answers a spegel-ts node asking for the providers of a record only it holds', async () => {
      const peer = go!
      const layer = localOnly.children.at(-1)!
      await peer.provide([layer.digest], { localOnly: true })
      assert.deepEqual((await peer.localProviders(layer.digest)).map((p) => [p.id, p.ips]), [[peer.id, [goNet!.ip]]],
        'the Go peer answers GET_PROVIDERS with itself and its address')
      for (const node of [n1, n2, n3]) {
        assert.deepEqual((await peer.getProviders(layer.digest, node.peerId!)).providers, [], `${node.name} has no record of it`)
      }
      // So node 1's mirror can only have learned of the holder from the Go peer's answer to its GET_PROVIDERS query.
      const res = await fetch(`${n1.mirrorUrl}/v2/${localOnly.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster!.upstreamHost)}`)
      assert.equal(res.status, 200)
      const body = Buffer.from(await res.arrayBuffer())
      assert.equal('sha256:' + createHash('sha256').update(body).digest('hex'), layer.digest)
      assert.equal(body.length, layer.size)
    })
  })

  describe('bootstrapped from id-less addresses (Spegel\'s DNS bootstrap)', () => {
    before(async () => {
      // A new Go node (new identity) at the same address.
      await go?.stop()
      go = undefined
    })

    it('joins through node 2\'s /ip4/…/tcp/5001, learning its id, and finds what node 2 holds', async () => {
      // Keys given at start are advertised before the node is online, as Spegel advertises containerd's content at
      // startup: queued by the provider, published once it is online.
      const peer = await startGo([`/ip4/${n2.ip}/tcp/${routerPort}`], keysOf(fromGoDns, cluster!.upstreamHost))
      await peer.waitReady()
      // Possibly more than once: like Spegel, the Go peer bootstraps again until its provider reports online.
      const learned = new Set(peer.logs().filter((r) => r.msg === 'learned bootstrap peer id').map((r) => r.id))
      assert.deepEqual([...learned], [n2.peerId], 'the id came from the handshake with node 2')
      const providers = await waitGoFinds(held.digest, n2)
      assert.deepEqual(providers.map((p) => p.id), [n2.peerId])
      for (const node of [n1, n2]) {
        const answer = await waitFor(async () => {
          const a = await peer.getProviders(fromGoDns.digest, node.peerId!)
          return a.providers.length > 0 ? a : undefined
        }, { timeoutMs: 15_000, intervalMs: 200, what: `${node.name} to store the record the Go peer queued while offline` })
        assert.deepEqual(answer.providers.map((p) => [p.id, p.ips]), [[peer.id, [goNet!.ip]]], `${node.name}'s record`)
      }
    })

    it('is the only bootstrap peer of a restarted node 3, which then pulls an image only the Go peer\'s host has', async () => {
      const peer = go!
      await n3.stopDaemon()
      const since = n3.logs().length
      // Exactly what Spegel's DNS bootstrapper yields: an IP without port or id (the router adds its own port).
      await n3.startDaemon({ bootstrapPeers: [`/ip4/${goNet!.ip}`] })
      const connected = n3.logs().slice(since).filter((r) => r.msg === 'bootstrap peer connected')
      assert.ok(connected.some((r) => r.peer === peer.id && r.addr === `/ip4/${goNet!.ip}/tcp/${routerPort}`), `node 3 bootstrapped through the Go peer: ${JSON.stringify(connected)}`)

      // containerd on node 3 pulls through its mirror; the Go peer's host serves the blobs (the upstream only confirms
      // the tag).
      const ref = `${cluster!.upstreamHost}/${fromGoDns.repository}:v1`
      await cluster!.waitServable(n3, fromGoDns.repository, 'manifests', 'v1')
      const pulled = n3.logs().length
      await n3.pull(ref)
      assert.equal(await n3.imageDigest(ref), fromGoDns.digest)
      const held3 = await n3.contentDigests()
      for (const digest of [fromGoDns.digest, ...fromGoDns.children.map((c) => c.digest)]) assert.ok(held3.has(digest), `node 3 holds ${digest}`)
      await cluster!.upstream.waitForQuiet()
      assert.equal(cluster!.upstream.blobBytesServed({ repository: fromGoDns.repository }), 0, 'the upstream sent no blob')

      // Node 3 now advertises the image too, and the Go peer finds it.
      await waitFor(() => n3.logs().slice(pulled).some((r) => r.msg === 'advertisements updated'), { timeoutMs: 30_000, what: 'node 3 to advertise' })
      const layer = fromGoDns.children.at(-1)!.digest
      const providers = await waitGoFinds(layer, n3)
      assert.deepEqual(providers.map((p) => p.id), [n3.peerId], `providers of ${layer}: ${describePeers(providers)}`)
    })
  })
})
