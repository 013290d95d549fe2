import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { describe, it, before, after } from 'node:test'
import { pino } from 'pino'
import { maxRegistryLabels, Metrics } from '../../../src/metrics/index.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { RequestFilter } from '../../../src/oci/filter.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import type { RequestRecord } from '../../../src/registry/types.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { waitFor } from '../../helpers/wait.ts'
import { startPeerPair } from './peer-pair.ts'

const logger = pino({ level: 'silent' })

function fixture () {
  const store = new MemoryStore()
  const layer = randomBytes(100_000)
  const layerDigest = store.addBlob(layer, MediaType.ociLayerGzip)
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })
  const configDigest = store.addBlob(config)
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length },
    layers: [{ mediaType: MediaType.ociLayerGzip, digest: layerDigest, size: layer.length }],
  })
  const manifestDigest = store.addBlob(manifest)
  const dockerManifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.dockerManifest, config: {}, layers: [] })
  const dockerDigest = store.addBlob(dockerManifest)
  const sbom = JSON.stringify({ spdxVersion: 'SPDX-2.3', name: 'x' })
  const sbomDigest = store.addBlob(sbom)
  const empty = store.addBlob('')
  store.addImage('docker.io/library/app:1.0', manifestDigest)
  store.addImage('10.0.0.2:5000/team/app:v2', dockerDigest)
  return { store, layer, layerDigest, configDigest, manifest, manifestDigest, dockerDigest, sbom, sbomDigest, empty }
}

describe('registry API served from a local store', () => {
  const f = fixture()
  const app = createRegistryApp({ store: f.store, logger })
  after(async () => { await app.close() })

  it('answers the API version check', async () => {
    for (const url of ['/v2/', '/v2']) {
      const res = await app.inject({ method: 'GET', url })
      assert.equal(res.statusCode, 200)
      assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0')
    }
  })

  it('serves a manifest by tag with its real media type', async () => {
    const res = await app.inject({ method: 'GET', url: '/v2/library/app/manifests/1.0?ns=docker.io' })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-type'], MediaType.ociManifest)
    assert.equal(res.headers['docker-content-digest'], f.manifestDigest)
    assert.equal(res.headers['content-length'], String(f.manifest.length))
    assert.equal(res.headers['oci-namespace'], 'docker.io')
    assert.equal(res.body, f.manifest)
  })

  it('resolves a tag of a registry with a port, URL-encoded in ns', async () => {
    const res = await app.inject({ method: 'HEAD', url: '/v2/team/app/manifests/v2?ns=10.0.0.2%3A5000' })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-type'], MediaType.dockerManifest)
    assert.equal(res.headers['docker-content-digest'], f.dockerDigest)
    assert.equal(res.body, '')
  })

  it('resolves a tag without ns by searching every registry (skopeo, curl)', async () => {
    const res = await app.inject({ method: 'GET', url: '/v2/library/app/manifests/1.0' })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['docker-content-digest'], f.manifestDigest)
  })

  it('serves a manifest by digest from any repository', async () => {
    const res = await app.inject({ method: 'GET', url: `/v2/other/repo/manifests/${f.manifestDigest}?ns=docker.io` })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-type'], MediaType.ociManifest)
  })

  it('serves blobs with their length, digest and accept-ranges', async () => {
    const res = await app.inject({ method: 'GET', url: `/v2/library/app/blobs/${f.layerDigest}?ns=docker.io` })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-length'], String(f.layer.length))
    assert.equal(res.headers['accept-ranges'], 'bytes')
    assert.equal(res.headers['docker-content-digest'], f.layerDigest)
    assert.equal(res.headers['content-type'], MediaType.ociLayerGzip)
    assert.equal('sha256:' + createHash('sha256').update(res.rawPayload).digest('hex'), f.layerDigest)
  })

  it('serves small JSON blobs that are not manifests (SBOMs, configs)', async () => {
    const sbom = await app.inject({ method: 'GET', url: `/v2/library/app/blobs/${f.sbomDigest}` })
    assert.equal(sbom.statusCode, 200)
    assert.equal(sbom.body, f.sbom)
    const config = await app.inject({ method: 'GET', url: `/v2/library/app/blobs/${f.configDigest}` })
    assert.equal(config.statusCode, 200)
    assert.equal(config.headers['content-type'], MediaType.ociConfig)
  })

  it('serves an empty blob', async () => {
    const res = await app.inject({ method: 'GET', url: `/v2/library/app/blobs/${f.empty}` })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-length'], '0')
    assert.equal(res.body, '')
  })

  it('answers HEAD on a blob with headers only', async () => {
    const res = await app.inject({ method: 'HEAD', url: `/v2/library/app/blobs/${f.layerDigest}` })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['content-length'], String(f.layer.length))
    assert.equal(res.rawPayload.length, 0)
  })

  const ranges: Array<[string, number, number]> = [
    ['bytes=0-0', 0, 0],
    ['bytes=1-3', 1, 3],
    ['bytes=99990-', 99990, 99999],
    ['bytes=-10', 99990, 99999],
    ['bytes=-1000000', 0, 99999],
    ['bytes=50000-9999999', 50000, 99999],
  ]
  for (const [header, start, end] of ranges) {
    it(`serves the range ${header}`, async () => {
      const res = await app.inject({ method: 'GET', url: `/v2/library/app/blobs/${f.layerDigest}`, headers: { range: header } })
      assert.equal(res.statusCode, 206)
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/${f.layer.length}`)
      assert.equal(res.headers['content-length'], String(end - start + 1))
      assert.equal(res.headers['content-type'], MediaType.octetStream)
      assert.deepEqual(res.rawPayload, f.layer.subarray(start, end + 1))
    })
  }

  it('ignores Range on manifests', async () => {
    const res = await app.inject({ method: 'GET', url: `/v2/library/app/manifests/${f.manifestDigest}`, headers: { range: 'bytes=0-1' } })
    assert.equal(res.statusCode, 200)
    assert.equal(res.body, f.manifest)
  })

  it('reports ready and live', async () => {
    assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
    assert.equal((await app.inject({ method: 'GET', url: '/livez' })).statusCode, 200)
  })
})

describe('registry /readyz?verbose with a readiness detail', () => {
  const f = fixture()
  const withDetail = createRegistryApp({ store: f.store, logger, readinessDetail: () => '[+]detail: fine' })
  const without = createRegistryApp({ store: f.store, logger })
  after(async () => { await withDetail.close(); await without.close() })

  const cases: Array<[string, string, string]> = [
    ['/readyz', 'ok', 'ok'],
    ['/readyz?verbose', 'ok\n[+]detail: fine\n', 'ok'],
    ['/readyz?verbose=1', 'ok\n[+]detail: fine\n', 'ok'],
    ['/readyz?x=1&verbose', 'ok\n[+]detail: fine\n', 'ok'],
    ['/readyz?verbosely', 'ok', 'ok'],
  ]
  for (const [url, detailed, plain] of cases) {
    it(`${url}: ${JSON.stringify(detailed)} with the slot, ${JSON.stringify(plain)} without`, async () => {
      const a = await withDetail.inject(url)
      assert.equal(a.statusCode, 200)
      assert.equal(a.body, detailed)
      const b = await without.inject(url)
      assert.equal(b.statusCode, 200)
      assert.equal(b.body, plain)
    })
  }
})

describe('registry reports each request with who asked (the doctor counts the node\'s own)', () => {
  it('tells this node\'s containerd from a peer by X-Spegel-Mirrored', async () => {
    const f = fixture()
    const records: RequestRecord[] = []
    const app = createRegistryApp({ store: f.store, logger, onRequest: (r) => { records.push(r) } })
    try {
      const blob = `/v2/library/app/blobs/${f.layerDigest}`
      assert.equal((await app.inject({ method: 'HEAD', url: blob })).statusCode, 200)
      assert.equal((await app.inject({ method: 'GET', url: blob, headers: { 'x-spegel-mirrored': 'true' } })).statusCode, 200)
      assert.equal((await app.inject({ method: 'GET', url: `/v2/library/app/blobs/sha256:${'0'.repeat(64)}` })).statusCode, 404)
      await waitFor(() => records.length === 3, { what: 'three request records' })
      assert.deepEqual(records.map((r) => [r.method, r.status, r.requester]), [['HEAD', 200, 'node'], ['GET', 200, 'peer'], ['GET', 404, 'node']])
    } finally {
      await app.close()
    }
  })
})

describe('registry tells the advertiser when a peer was sent here for content it does not hold', () => {
  it('calls onPeerMiss for a peer\'s request of a missing digest, not for its node\'s own or for content it holds', async () => {
    const f = fixture()
    const misses: string[] = []
    const app = createRegistryApp({ store: f.store, logger, onPeerMiss: (d) => { misses.push(d) } })
    try {
      const gone = `sha256:${'0'.repeat(64)}`
      const peer = { 'x-spegel-mirrored': 'true' }
      assert.equal((await app.inject({ method: 'GET', url: `/v2/library/app/blobs/${f.layerDigest}`, headers: peer })).statusCode, 200)
      assert.equal((await app.inject({ method: 'GET', url: `/v2/library/app/blobs/${gone}` })).statusCode, 404)
      assert.equal((await app.inject({ method: 'GET', url: '/v2/library/app/manifests/nope', headers: peer })).statusCode, 404)
      assert.deepEqual(misses, [], 'held content, the node\'s own request and a tag are not misses')
      assert.equal((await app.inject({ method: 'HEAD', url: `/v2/library/app/blobs/${gone}`, headers: peer })).statusCode, 404)
      assert.equal((await app.inject({ method: 'GET', url: `/v2/library/app/manifests/${gone}`, headers: peer })).statusCode, 404)
      assert.deepEqual(misses, [gone, gone])
    } finally {
      await app.close()
    }
  })
})

describe('registry serves only what this node shares (the advertiser\'s keys)', () => {
  it('answers 404 for local content and tags outside the shared set, whoever asks and whatever ?ns= names', async () => {
    const f = fixture()
    // docker.io/library/app:1.0 is shared; 10.0.0.2:5000/team/app:v2 (say, a private registry) is not.
    const shared = new Set(['docker.io/library/app:1.0', f.manifestDigest, f.configDigest, f.layerDigest])
    const app = createRegistryApp({ store: f.store, logger, shared })
    const peer = { 'x-spegel-mirrored': 'true' }
    try {
      const get = async (url: string, headers: Record<string, string> = {}): Promise<number> => (await app.inject({ method: 'GET', url, headers })).statusCode
      for (const headers of [peer, {}]) {
        assert.equal(await get(`/v2/library/app/blobs/${f.layerDigest}?ns=docker.io`, headers), 200)
        assert.equal(await get('/v2/library/app/manifests/1.0?ns=docker.io', headers), 200)
        assert.equal(await get('/v2/library/app/manifests/1.0', headers), 200, 'a tag without ns finds the shared image')
        assert.equal(await get(`/v2/team/app/manifests/${f.dockerDigest}?ns=10.0.0.2%3A5000`, headers), 404)
        assert.equal(await get(`/v2/library/app/manifests/${f.dockerDigest}?ns=docker.io`, headers), 404, 'another ns does not open it')
        assert.equal(await get('/v2/team/app/manifests/v2?ns=10.0.0.2%3A5000', headers), 404)
        assert.equal(await get('/v2/team/app/manifests/v2', headers), 404, 'a tag without ns skips images not shared')
        assert.equal(await get(`/v2/library/app/blobs/${f.sbomDigest}`, headers), 404, 'content of no shared image')
      }
      // Shared later (the advertiser's next pass): served from then on.
      shared.add(f.sbomDigest)
      assert.equal(await get(`/v2/library/app/blobs/${f.sbomDigest}`, peer), 200)
    } finally {
      await app.close()
    }
  })

  it('streams a download in progress to peers only while this node\'s herd claims it', async () => {
    const f = fixture()
    const bytes = randomBytes(1000)
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex')
    const claims = new Set<string>()
    const app = createRegistryApp({ store: f.store, logger, shared: new Set<string>(), downloading: (d) => claims.has(d), inflightStartWaitMs: 0 })
    const headers = { 'x-spegel-mirrored': 'true', 'x-spegel-inflight': 'accept' }
    try {
      const download = f.store.startDownload(digest, bytes.length)
      download.append(bytes.subarray(0, 10))
      assert.equal((await app.inject({ method: 'HEAD', url: `/v2/library/app/blobs/${digest}`, headers })).statusCode, 404, 'not claimed: not served')
      claims.add(digest)
      const res = await app.inject({ method: 'HEAD', url: `/v2/library/app/blobs/${digest}`, headers })
      assert.equal(res.statusCode, 200)
      assert.equal(res.headers['x-spegel-inflight'], 'true')
      download.abort()
    } finally {
      await app.close()
    }
  })
})

// Over a real socket: the body paths write their headers with writeHead, which app.inject() records but a real
// response does not keep for getHeader().
describe('registry counts the bytes it served (spegel_served_bytes_total)', () => {
  const served = async (metrics: Metrics, source: string): Promise<number | undefined> =>
    (await metrics.servedBytes.get()).values.find((v) => v.labels.source === source)?.value
  const over = async (app: ReturnType<typeof createRegistryApp>): Promise<(request: { method: string, url: string, headers?: Record<string, string> }) => Promise<{ statusCode: number, rawPayload: Buffer }>> => {
    const address = await app.listen({ host: '127.0.0.1', port: 0 })
    return async ({ method, url, headers }) => {
      const res = await fetch(address + url, { method, ...(headers !== undefined ? { headers } : {}) })
      return { statusCode: res.status, rawPayload: Buffer.from(await res.arrayBuffer()) }
    }
  }

  it('counts complete GETs of local content, whole or ranged, and nothing else', async () => {
    const f = fixture()
    const metrics = new Metrics()
    const app = createRegistryApp({ store: f.store, logger, metrics })
    try {
      const request = await over(app)
      const blob = `/v2/library/app/blobs/${f.layerDigest}`
      assert.equal((await request({ method: 'GET', url: blob })).statusCode, 200)
      assert.equal(await served(metrics, 'local'), f.layer.length)
      assert.equal((await request({ method: 'GET', url: blob, headers: { range: 'bytes=10-19' } })).statusCode, 206)
      assert.equal(await served(metrics, 'local'), f.layer.length + 10)
      // HEAD, errors and the version check send no content.
      assert.equal((await request({ method: 'HEAD', url: blob })).statusCode, 200)
      assert.equal((await request({ method: 'GET', url: `/v2/library/app/blobs/sha256:${'0'.repeat(64)}` })).statusCode, 404)
      assert.equal((await request({ method: 'GET', url: '/v2/' })).statusCode, 200)
      assert.equal(await served(metrics, 'local'), f.layer.length + 10)
      assert.equal(await served(metrics, 'peer'), undefined)
    } finally {
      await app.close()
    }
  })

  it('counts content a peer served as source="peer"', async () => {
    const body = randomBytes(300_000)
    const store = new MemoryStore()
    const digest = store.addBlob(body)
    const metrics = new Metrics()
    const pair = await startPeerPair(store, [digest], { subnet: 203, metrics })
    try {
      const res = await fetch(`${pair.nodeUrl}/v2/library/app/blobs/${digest}?ns=docker.io`)
      assert.equal(res.status, 200)
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), body)
      assert.equal(await served(metrics, 'peer'), body.length)
      assert.equal(await served(metrics, 'local'), undefined)
    } finally {
      await pair.close()
    }
  })
})

// The cache hit ratio of Spegel's dashboards: a request this node's containerd sent to peers, by whether a peer served it.
describe('registry counts mirror requests by registry and outcome (spegel_mirror_requests_total)', () => {
  const counted = async (metrics: Metrics): Promise<string[]> =>
    (await metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('spegel_mirror_requests_total{'))

  it('a peer hit as hit, a miss as miss, under the request\'s registry; local content and peers\' requests not at all', async () => {
    const peerStore = new MemoryStore()
    const remote = randomBytes(10_000)
    const remoteDigest = peerStore.addBlob(remote)
    const nodeStore = new MemoryStore()
    const localDigest = nodeStore.addBlob(randomBytes(10_000))
    const metrics = new Metrics({ defaultMetrics: false })
    const pair = await startPeerPair(peerStore, [remoteDigest], { subnet: 205, resolveTimeoutMs: 50, metrics, nodeStore })
    try {
      const get = async (digest: string, ns: string, headers: Record<string, string> = {}): Promise<number> => {
        const res = await fetch(`${pair.nodeUrl}/v2/library/app/blobs/${digest}?ns=${ns}`, { headers })
        await res.arrayBuffer()
        return res.status
      }
      assert.deepEqual(await counted(metrics), [])
      assert.equal(await get(localDigest, 'docker.io'), 200)
      assert.equal(await get(remoteDigest, 'docker.io', { 'x-spegel-mirrored': 'true' }), 404, 'a peer\'s request is not sent on to peers')
      assert.deepEqual(await counted(metrics), [], 'nothing was asked of peers')
      assert.equal(await get(remoteDigest, 'docker.io'), 200)
      assert.equal(await get(`sha256:${'2'.repeat(64)}`, 'docker.io'), 404)
      assert.equal(await get(`sha256:${'3'.repeat(64)}`, 'ghcr.io'), 404)
      assert.deepEqual((await counted(metrics)).sort(), [
        'spegel_mirror_requests_total{registry="docker.io",cache="hit"} 1',
        'spegel_mirror_requests_total{registry="docker.io",cache="miss"} 1',
        'spegel_mirror_requests_total{registry="ghcr.io",cache="miss"} 1',
      ])
      const lastSuccess = (await metrics.mirrorLastSuccess.get()).values[0]?.value ?? 0
      assert.ok(lastSuccess > 0 && lastSuccess <= Date.now() / 1000, 'the hit set the last success time')
    } finally {
      await pair.close()
    }
  })

  it('the registry label takes at most maxRegistryLabels values: made-up ?ns= names beyond count as other', async () => {
    const store = new MemoryStore()
    const metrics = new Metrics({ defaultMetrics: false })
    const pair = await startPeerPair(new MemoryStore(), [], { subnet: 206, resolveTimeoutMs: 10, metrics, nodeStore: store })
    try {
      const missing = `sha256:${'4'.repeat(64)}`
      for (let i = 0; i < maxRegistryLabels + 40; i++) {
        const res = await fetch(`${pair.nodeUrl}/v2/library/app/blobs/${missing}?ns=made-up-${i}.example`)
        await res.arrayBuffer()
        assert.equal(res.status, 404)
      }
      const lines = await counted(metrics)
      assert.equal(lines.length, maxRegistryLabels + 1, 'one series per registry up to the bound, then other')
      assert.ok(lines.includes('spegel_mirror_requests_total{registry="other",cache="miss"} 40'), lines.filter((l) => l.includes('other')).join('\n'))
    } finally {
      await pair.close()
    }
  })
})

/** Rejects every `:latest` tag, as `--registry-filters=:latest$` does. */
const noLatest = await RequestFilter.create({ registryFilters: [':latest$'] })

describe('registry API rejects bad requests with OCI errors', () => {
  const f = fixture()
  const app = createRegistryApp({ store: f.store, logger, filter: noLatest })
  after(async () => { await app.close() })
  const missing = 'sha256:' + '0'.repeat(64)
  const blob = `/v2/library/app/blobs/${f.layerDigest}`

  const table: Array<{ name: string, method?: string, url: string, headers?: Record<string, string>, status: number, code?: string }> = [
    { name: 'unknown tag', url: '/v2/library/app/manifests/2.0?ns=docker.io', status: 404, code: 'MANIFEST_UNKNOWN' },
    { name: 'unknown tag without ns', url: '/v2/library/nope/manifests/2.0', status: 404, code: 'MANIFEST_UNKNOWN' },
    { name: 'unknown manifest digest', url: `/v2/library/app/manifests/${missing}`, status: 404, code: 'MANIFEST_UNKNOWN' },
    { name: 'blob fetched as manifest', url: `/v2/library/app/manifests/${f.layerDigest}`, status: 404, code: 'MANIFEST_UNKNOWN' },
    { name: 'unknown blob', url: `/v2/library/app/blobs/${missing}`, status: 404, code: 'BLOB_UNKNOWN' },
    { name: 'HEAD unknown blob', method: 'HEAD', url: `/v2/library/app/blobs/${missing}`, status: 404 },
    { name: 'filtered tag', url: '/v2/library/app/manifests/latest?ns=docker.io', status: 404, code: 'MANIFEST_UNKNOWN' },
    { name: 'digest with bad hex', url: '/v2/library/app/blobs/sha256:xyz', status: 400, code: 'DIGEST_INVALID' },
    { name: 'digest too short', url: `/v2/library/app/blobs/${f.layerDigest.slice(0, -1)}`, status: 400, code: 'DIGEST_INVALID' },
    { name: 'uppercase digest', url: `/v2/library/app/blobs/${f.layerDigest.toUpperCase()}`, status: 400, code: 'DIGEST_INVALID' },
    { name: 'unsupported algorithm', url: '/v2/library/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e', status: 400, code: 'DIGEST_INVALID' },
    { name: 'tag on blobs', url: '/v2/library/app/blobs/latest', status: 400, code: 'DIGEST_INVALID' },
    { name: 'invalid tag', url: '/v2/library/app/manifests/-bad', status: 404, code: 'MANIFEST_UNKNOWN' },
    { name: 'uppercase repository', url: `/v2/Library/app/blobs/${f.layerDigest}`, status: 400, code: 'NAME_INVALID' },
    { name: 'triple underscore', url: `/v2/foo___bar/blobs/${f.layerDigest}`, status: 400, code: 'NAME_INVALID' },
    // The client library normalises the dots away, leaving a path outside /v2/.
    { name: 'dot-dot traversal', url: `/v2/../../etc/blobs/${f.layerDigest}`, status: 404, code: 'NAME_UNKNOWN' },
    { name: 'encoded traversal', url: `/v2/..%2f..%2fetc/blobs/${f.layerDigest}`, status: 400, code: 'NAME_INVALID' },
    { name: 'encoded slash in digest', url: '/v2/library/app/blobs/sha256%3A..%2F..%2Fetc%2Fpasswd', status: 400, code: 'NAME_INVALID' },
    { name: 'traversal in digest', url: '/v2/library/app/blobs/sha256:../../../../etc/passwd', status: 404, code: 'NAME_UNKNOWN' },
    { name: 'unknown endpoint', url: '/v2/library/app/tags/list', status: 404, code: 'NAME_UNKNOWN' },
    { name: 'bad ns', url: '/v2/library/app/manifests/1.0?ns=a/b', status: 400, code: 'NAME_INVALID' },
    { name: 'malformed ns', url: '/v2/library/app/manifests/1.0?ns=%zz', status: 400, code: 'NAME_INVALID' },
    { name: 'PUT manifest', method: 'PUT', url: '/v2/library/app/manifests/1.0', status: 405, code: 'UNSUPPORTED' },
    { name: 'POST upload', method: 'POST', url: '/v2/library/app/blobs/uploads/', status: 405, code: 'UNSUPPORTED' },
    { name: 'PATCH upload', method: 'PATCH', url: '/v2/library/app/blobs/uploads/x', status: 405, code: 'UNSUPPORTED' },
    { name: 'DELETE blob', method: 'DELETE', url: blob, status: 405, code: 'UNSUPPORTED' },
    { name: 'range past the end', url: blob, headers: { range: 'bytes=100000-' }, status: 416, code: 'SIZE_INVALID' },
    // Malformed byte ranges are refused, as Go's http.ServeContent and the OCI conformance suite (bytes=500-0) want.
    { name: 'reversed range', url: blob, headers: { range: 'bytes=9-1' }, status: 416, code: 'SIZE_INVALID' },
    { name: 'zero suffix range', url: blob, headers: { range: 'bytes=-0' }, status: 416, code: 'SIZE_INVALID' },
    { name: 'huge range', url: blob, headers: { range: 'bytes=99999999999999999999-' }, status: 416, code: 'SIZE_INVALID' },
    { name: 'garbage range', url: blob, headers: { range: 'bytes=abc' }, status: 416, code: 'SIZE_INVALID' },
  ]
  // The OCI spec: a 4xx JSON error body uses one of these codes.
  const specCodes = new Set(['BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS'])
  it('answers 4xx only with the spec\'s error codes', () => {
    for (const c of table) if (c.code !== undefined && c.status < 500) assert.ok(specCodes.has(c.code), `${c.name}: ${c.code}`)
  })
  // RFC 9110: a Range the server does not serve (another unit, several ranges) is ignored.
  for (const [name, range] of [['several ranges', 'bytes=0-1,5-6'], ['another unit', 'items=0-9']] as const) {
    it(`ignores ${name} (${range}): 200 with the whole blob`, async () => {
      const res = await app.inject({ method: 'GET', url: blob, headers: { range } })
      assert.equal(res.statusCode, 200)
      assert.equal(res.headers['content-range'], undefined)
      assert.equal(res.headers['content-length'], String(f.layer.length))
      assert.deepEqual(res.rawPayload, f.layer)
    })
  }
  for (const c of table) {
    it(`${c.name}: ${c.status}${c.code !== undefined ? ' ' + c.code : ''}`, async () => {
      const res = await app.inject({ method: (c.method ?? 'GET') as 'GET', url: c.url, headers: c.headers ?? {} })
      assert.equal(res.statusCode, c.status, res.body)
      assert.equal(res.headers['content-type'], 'application/json')
      if (c.code !== undefined) {
        const body = JSON.parse(res.body) as { errors: Array<{ code: string, message: string }> }
        assert.equal(body.errors.length, 1)
        assert.equal(body.errors[0]?.code, c.code)
        assert.ok((body.errors[0]?.message ?? '').length > 0)
        assert.equal(res.headers['content-length'], String(Buffer.byteLength(res.body)))
      }
    })
  }

  it('unsatisfiable range tells the size', async () => {
    const res = await app.inject({ method: 'GET', url: blob, headers: { range: 'bytes=100000-' } })
    assert.equal(res.headers['content-range'], `bytes */${f.layer.length}`)
  })

  it('paths outside /v2 are 404', async () => {
    const res = await app.inject({ method: 'GET', url: '/etc/passwd' })
    assert.equal(res.statusCode, 404)
  })
})

describe('registry basic auth', () => {
  const f = fixture()
  const app = createRegistryApp({ store: f.store, logger, basicAuth: { username: 'hello', password: 'world' } })
  after(async () => { await app.close() })
  const ok = 'Basic ' + Buffer.from('hello:world').toString('base64')
  const b64 = (text: string): string => Buffer.from(text).toString('base64')
  const cases: Array<[string, string | undefined, number]> = [
    ['/v2/', undefined, 401],
    ['/v2/', 'Basic ' + b64('hello:nope'), 401],
    ['/v2/', ok, 200],
    // As Go's Request.BasicAuth (what Spegel uses): the scheme in any case, strict base64, split at the first colon.
    ['/v2/', 'basic ' + b64('hello:world'), 200],
    ['/v2/', 'BASIC ' + b64('hello:world'), 200],
    ['/v2/', 'Bearer ' + b64('hello:world'), 401],
    ['/v2/', 'Basic  ' + b64('hello:world'), 401],
    ['/v2/', 'Basic ' + b64('hello:world').replace(/=+$/, ''), 401],
    ['/v2/', 'Basic ' + b64('hello:world') + '!', 401],
    ['/v2/', 'Basic ' + b64('hello:world\n'), 401],
    ['/v2/', 'Basic ' + b64('helloworld'), 401],
    ['/v2/', 'Basic ' + b64('hello:world:x'), 401],
    [`/v2/library/app/blobs/${f.layerDigest}`, ok, 200],
    [`/v2/library/app/blobs/${f.layerDigest}`, undefined, 401],
    ['/readyz', undefined, 200],
  ]
  for (const [url, auth, status] of cases) {
    it(`${url} with ${auth === undefined ? 'no credentials' : JSON.stringify(auth)}: ${status}`, async () => {
      const res = await app.inject({ method: 'GET', url, headers: auth === undefined ? {} : { authorization: auth } })
      assert.equal(res.statusCode, status)
      if (status === 401) {
        assert.equal(JSON.parse(res.body).errors[0].code, 'UNAUTHORIZED')
        assert.equal(res.headers['content-type'], 'application/json')
        assert.equal(res.headers['www-authenticate'], 'Basic realm="spegel"')
      }
    })
  }
})

describe('registry basic auth from a secret with a trailing newline (the bytes as they are, as Spegel)', () => {
  const f = fixture()
  const app = createRegistryApp({ store: f.store, logger, basicAuth: { username: 'hello', password: 'world\n' } })
  after(async () => { await app.close() })
  it('expects the newline in the password', async () => {
    const b64 = (text: string): string => Buffer.from(text).toString('base64')
    assert.equal((await app.inject({ url: '/v2/', headers: { authorization: 'Basic ' + b64('hello:world\n') } })).statusCode, 200)
    assert.equal((await app.inject({ url: '/v2/', headers: { authorization: 'Basic ' + b64('hello:world') } })).statusCode, 401)
  })
})

describe('registry with a mirrored-registries whitelist', () => {
  const f = fixture()
  const app = createRegistryApp({ store: f.store, logger, filter: new RequestFilter({ mirroredRegistries: ['https://docker.io'] }) })
  before(async () => { await app.ready() })
  after(async () => { await app.close() })
  it('serves whitelisted registries and rejects others', async () => {
    assert.equal((await app.inject({ url: '/v2/library/app/manifests/1.0?ns=docker.io' })).statusCode, 200)
    assert.equal((await app.inject({ url: '/v2/team/app/manifests/v2?ns=10.0.0.2%3A5000' })).statusCode, 404)
  })
})
