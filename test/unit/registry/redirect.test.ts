// --peer-redirect: the node's containerd is sent with 307 to a peer that holds a blob whole, instead of the blob being
// streamed through the node. Only whole-blob GETs are redirected; HEADs, ranges, manifests and blobs nobody holds take
// the usual way.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { Metrics } from '../../../src/metrics/index.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { startPeerPair, type PeerPair } from './peer-pair.ts'

describe('--peer-redirect', () => {
  const store = new MemoryStore()
  const layer = randomBytes(300_000)
  const digest = store.addBlob(layer, MediaType.ociLayerGzip)
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest, size: layer.length }, layers: [] })
  const manifestDigest = store.addBlob(manifest)
  const metrics = new Metrics()
  let pair: PeerPair
  before(async () => {
    pair = await startPeerPair(store, [digest, manifestDigest], { subnet: 223, metrics, redirect: true })
  })
  after(async () => { await pair.close() })

  const get = async (url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Response> => await fetch(url, { method, headers, redirect: 'manual' })

  it('answers the node\'s GET of a blob a peer holds with 307 to that peer, which serves the right bytes', async () => {
    const res = await get(`${pair.nodeUrl}/v2/library/app/blobs/${digest}?ns=docker.io`)
    assert.equal(res.status, 307)
    const location = res.headers.get('location')
    assert.equal(location, `${pair.peerUrl}/v2/library/app/blobs/${digest}?ns=docker.io`)
    assert.equal(res.headers.get('content-length'), '0')
    const followed = await fetch(location!)
    assert.equal(followed.status, 200)
    const body = Buffer.from(await followed.arrayBuffer())
    assert.equal('sha256:' + createHash('sha256').update(body).digest('hex'), digest)
    const hits = await metrics.registry.getSingleMetricAsString('spegel_mirror_requests_total')
    assert.match(hits, /cache="hit"\} 1$/m, 'a redirect counts as a mirror hit')
  })

  it('streams what it does not redirect: a HEAD, a range, a manifest', async () => {
    const head = await get(`${pair.nodeUrl}/v2/library/app/blobs/${digest}?ns=docker.io`, {}, 'HEAD')
    assert.equal(head.status, 200)
    assert.equal(head.headers.get('content-length'), String(layer.length))
    const range = await get(`${pair.nodeUrl}/v2/library/app/blobs/${digest}?ns=docker.io`, { range: 'bytes=10-19' })
    assert.equal(range.status, 206)
    assert.deepEqual(Buffer.from(await range.arrayBuffer()), layer.subarray(10, 20))
    const m = await get(`${pair.nodeUrl}/v2/library/app/manifests/${manifestDigest}?ns=docker.io`)
    assert.equal(m.status, 200)
    assert.equal(await m.text(), manifest)
  })

  it('answers 404 for a blob nobody holds, so containerd goes to the upstream', async () => {
    const res = await get(`${pair.nodeUrl}/v2/library/app/blobs/sha256:${'1'.repeat(64)}?ns=docker.io`)
    assert.equal(res.status, 404)
    assert.equal(res.headers.get('location'), null)
  })

  it('never redirects a peer: a peer\'s request for a blob this node lacks is 404 (no second hop)', async () => {
    const res = await get(`${pair.nodeUrl}/v2/library/app/blobs/${digest}?ns=docker.io`, { 'x-spegel-mirrored': 'true' })
    assert.equal(res.status, 404)
  })
})
