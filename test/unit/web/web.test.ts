import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import type { AdvertisedImage } from '../../../src/advertise/index.ts'
import type { DoctorReport } from '../../../src/doctor/index.ts'
import { Metrics } from '../../../src/metrics/index.ts'
import type { HerdEvent } from '../../../src/registry/herd.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import type { Mirror, MirrorRequest, MirrorResponse, RequestRecord } from '../../../src/registry/types.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { tagReference } from '../../../src/oci/reference.ts'
import { MemoryStore } from '../../../src/store/memory.ts'
import {
  createMetricsApp, escapeHtml, formatBytes, formatDuration, InvalidImageError, measurePull, parseImageWithDefaults, RecentRequests,
  type DebugWebSources,
} from '../../../src/web/index.ts'
import { compileStringQuery } from '../../../src/web/query.ts'

const logger = pino({ level: 'silent' })
const evil = '<script>alert(1)</script>'

function record (i: number, source: RequestRecord['source'] = 'local'): RequestRecord {
  return { path: { kind: 'blobs', repository: 'team/app', registry: 'example.com', digest: `sha256:${String(i).padStart(64, '0')}` }, method: 'GET', status: 200, source, requester: 'node', bytes: i, durationMs: i }
}

function sources (overrides: Partial<DebugWebSources> = {}): DebugWebSources {
  const recent = new RecentRequests(3)
  recent.record(record(1, 'peer'))
  const images: AdvertisedImage[] = [
    { name: 'example.com/team/app:1.0', registry: 'example.com', digest: 'sha256:' + 'a'.repeat(64), tag: '1.0', digests: ['sha256:' + 'a'.repeat(64), 'sha256:' + 'b'.repeat(64)] },
    { name: `example.com/evil:${'x'}`, registry: 'example.com', digest: 'sha256:' + 'c'.repeat(64), tag: evil, digests: [] },
  ]
  const report: DoctorReport = {
    results: [{ check: 'hosts-toml', status: 'finding', summary: 'missing', findings: [{ check: 'hosts-toml', problem: `no hosts.toml ${evil}`, impact: 'pulls skip the mirror', fix: 'spegel configuration …' }] }],
    findings: [{ check: 'hosts-toml', problem: `no hosts.toml ${evil}`, impact: 'pulls skip the mirror', fix: 'spegel configuration …' }],
    talos: false,
    finishedAt: new Date(),
  }
  return {
    addresses: () => ['/ip4/10.0.0.1/tcp/5001/p2p/12D3KooWself'],
    peers: () => [{ id: '12D3KooWpeerA', addresses: ['/ip4/10.0.0.2/tcp/5001'] }, { id: evil, addresses: [] }],
    routerStatus: () => ({ ready: true, routingTableSize: 2 }),
    advertised: () => ({ images, keys: 7 }),
    recent,
    doctor: () => report,
    ...overrides,
  }
}

describe('format helpers', () => {
  it('escapes HTML, formats bytes and durations like Spegel', () => {
    assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;')
    assert.equal(formatBytes(512), '512 B')
    assert.equal(formatBytes(19 * 1024), '19.0 KB')
    assert.equal(formatBytes(1024 ** 3), '1.0 GB')
    assert.equal(formatDuration(0.2), '<1ms')
    assert.equal(formatDuration(12.4), '12ms')
    assert.equal(formatDuration(3400), '3.4s')
    assert.equal(formatDuration(7 * 60_000 + 8000), '7m 8s')
    assert.equal(formatDuration(2 * 3_600_000), '2h')
  })
})

describe('debug page with names for loopback callers only (the registry\'s mutual TLS on)', () => {
  it('hides image names, tags and digests from callers elsewhere, counts intact; loopback (kubectl port-forward) sees them', async () => {
    const herd: HerdEvent[] = [{ digest: 'sha256:' + 'd'.repeat(64), outcome: 'won', at: Date.now() }]
    const app = createMetricsApp({ metrics: new Metrics({ defaultMetrics: false }), logger, peerId: 'self', debugWeb: { ...sources({ herd: () => herd }), namesForLoopbackOnly: true, measure: async () => { throw new Error('not called') } } })
    try {
      const from = async (remoteAddress: string): Promise<{ json: string, page: string, measure: number }> => ({
        json: (await app.inject({ url: '/debug/web/status.json', remoteAddress })).body,
        page: (await app.inject({ url: '/debug/web/', remoteAddress })).body,
        measure: (await app.inject({ url: '/debug/web/measure?image=example.com/team/app:1.0', remoteAddress })).statusCode,
      })
      const outside = await from('10.1.2.3')
      for (const text of [outside.json, outside.page]) {
        assert.doesNotMatch(text, /team\/app|aaaaaaaa|dddddddd|0000000001/, 'no name, tag or digest')
        assert.match(text, /hidden/)
      }
      const status = JSON.parse(outside.json) as { images: Array<{ digests: string[] }>, advertisedKeys: number, recentRequests: unknown[] }
      assert.deepEqual(status.images.map((i) => i.digests.length), [2, 0], 'counts intact')
      assert.equal(status.advertisedKeys, 7)
      assert.equal(status.recentRequests.length, 1)
      assert.equal(outside.measure, 403)
      for (const address of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
        const inside = await from(address)
        assert.match(inside.json, /example\.com\/team\/app:1\.0/)
        assert.match(inside.json, /dddddddd/)
        assert.match(inside.page, /team\/app/)
        assert.equal(inside.measure, 500, 'measuring is allowed (and fails here by design)')
      }
    } finally {
      await app.close()
    }
  })
})

describe('RecentRequests', () => {
  it('keeps the last N requests, newest first', () => {
    const recent = new RecentRequests(3)
    for (let i = 1; i <= 5; i++) recent.record(record(i))
    assert.deepEqual(recent.list().map((r) => r.bytes), [5, 4, 3])
    assert.equal(recent.list()[0]?.reference, 'sha256:' + '5'.padStart(64, '0'))
    assert.equal(recent.list()[0]?.registry, 'example.com')
  })
})

describe('parseImageWithDefaults', () => {
  it('applies Docker defaults', () => {
    assert.equal(parseImageWithDefaults('nginx').name, 'docker.io/library/nginx:latest')
    assert.equal(parseImageWithDefaults('bitnami/redis:7').name, 'docker.io/bitnami/redis:7')
    assert.equal(parseImageWithDefaults('ghcr.io/spegel-org/spegel:v0.30.0').registry, 'ghcr.io')
    assert.equal(parseImageWithDefaults('localhost:5000/app').name, 'localhost:5000/app:latest')
    const d = parseImageWithDefaults(`example.com/app@sha256:${'e'.repeat(64)}`)
    assert.equal(d.digest, `sha256:${'e'.repeat(64)}`)
    assert.equal(d.tag, undefined)
    for (const bad of ['', '  ', 'http://x/y', 'UPPER/case', 'a:b:c']) assert.throws(() => parseImageWithDefaults(bad), InvalidImageError, bad)
  })
})

describe('metrics app', () => {
  const peerId = '12D3KooWself'

  it('serves /metrics in the Prometheus text format', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    metrics.servedBytes.inc({ source: 'peer' }, 42)
    const app = createMetricsApp({ metrics, logger, peerId })
    const res = await app.inject('/metrics')
    assert.equal(res.statusCode, 200)
    assert.match(res.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/)
    assert.match(res.body, /^spegel_served_bytes_total\{source="peer"\} 42$/m)
    await app.close()
  })

  it('without the debug page, /debug/web/ is not served', async () => {
    const app = createMetricsApp({ metrics: new Metrics({ defaultMetrics: false }), logger, peerId })
    assert.equal((await app.inject('/debug/web/')).statusCode, 404)
    assert.equal((await app.inject('/debug/web/metadata')).statusCode, 404)
    await app.close()
  })

  describe('with the debug page', () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const app = createMetricsApp({ metrics, logger, peerId, debugWeb: sources() })
    after(async () => { await app.close() })

    it('/debug/web/metadata returns the peer id as Spegel does', async () => {
      const res = await app.inject('/debug/web/metadata')
      assert.equal(res.statusCode, 200)
      assert.deepEqual(res.json(), { libp2p: { id: peerId } })
    })

    it('/debug/web/ is one self-contained page with the stats, escaped', async () => {
      const res = await app.inject('/debug/web/')
      assert.equal(res.statusCode, 200)
      assert.match(res.headers['content-type'] as string, /^text\/html/)
      assert.equal(Number(res.headers['content-length']), Buffer.byteLength(res.body))
      const body = res.body
      assert.doesNotMatch(body, /<script[^>]+src=/, 'no external script')
      assert.doesNotMatch(body, /<link[^>]+href=/, 'no external stylesheet')
      assert.doesNotMatch(body, /https?:\/\/(unpkg|cdn)/)
      assert.ok(!body.includes(evil), 'untrusted values are escaped')
      assert.ok(body.includes(escapeHtml(evil)))
      assert.match(body, /<td class="mono" id="peer-id">12D3KooWself<\/td>/)
      assert.match(body, /<tr class="peer"><td class="mono">12D3KooWpeerA<\/td><td class="mono">\/ip4\/10\.0\.0\.2\/tcp\/5001<\/td><\/tr>/)
      assert.match(body, /<tr class="image"><td class="mono">example\.com\/team\/app<\/td><td>1\.0<\/td>/)
      assert.match(body, /id="key-count"><div class="label">Advertised keys<\/div><div class="value">7</)
      assert.match(body, /id="last-success">.*Pending/)
      assert.match(body, /<td class="source-peer">peer<\/td>/)
      assert.match(body, /1 finding/)
      assert.match(body, /<form id="measure-form"/)
      // Unmatched subpaths get the page too (Spegel), /debug/web redirects to it.
      assert.equal((await app.inject('/debug/web/anything')).statusCode, 200)
      const redirect = await app.inject('/debug/web')
      assert.equal(redirect.statusCode, 302)
      assert.equal(redirect.headers.location, '/debug/web/')
    })

    it('/debug/web/stats is the refreshable fragment and shows the last mirror success', async () => {
      metrics.mirrorLastSuccess.set(Date.now() / 1000 - 65)
      const res = await app.inject('/debug/web/stats')
      assert.equal(res.statusCode, 200)
      assert.doesNotMatch(res.body, /<html/)
      assert.match(res.body, /id="last-success">.*<span class="ok">1m 5s ago<\/span>/)
    })

    it('/debug/web/status.json has the same data for scripts', async () => {
      const res = await app.inject('/debug/web/status.json')
      const body = res.json()
      assert.equal(body.libp2p.id, peerId)
      assert.equal(body.peers.length, 2)
      assert.equal(body.images.length, 2)
      assert.equal(body.advertisedKeys, 7)
      assert.equal(body.recentRequests[0].source, 'peer')
      assert.equal(body.doctor.findings.length, 1)
    })

    it('/debug/web/measure rejects a missing or invalid image with 400 and an error paragraph', async () => {
      const empty = await app.inject('/debug/web/measure')
      assert.equal(empty.statusCode, 400)
      assert.match(empty.body, /^<p class="error">/)
      const bad = await app.inject(`/debug/web/measure?image=${encodeURIComponent('<b>BAD</b>')}`)
      assert.equal(bad.statusCode, 400)
      assert.ok(!bad.body.includes('<b>'))
    })

    it('/debug/web/measure rejects an image longer than 1024 characters or given twice before measuring', async () => {
      const long = await app.inject(`/debug/web/measure?image=example.com/${'a'.repeat(1020)}`)
      assert.equal(long.statusCode, 400)
      assert.match(long.body, /^<p class="error">querystring\/image must NOT have more than 1024 characters/)
      const twice = await app.inject('/debug/web/measure?image=a&image=b')
      assert.equal(twice.statusCode, 400)
      assert.match(twice.body, /^<p class="error">querystring\/image must be one string/)
    })

    it('debug routes are measured in the http_* metrics by route pattern', async () => {
      await app.inject('/debug/web/')
      const text = await metrics.registry.metrics()
      assert.match(text, /http_request_duration_seconds_count\{handler="\/debug\/web\/\*",method="GET",code="200"\} \d+/)
      assert.match(text, /http_request_duration_seconds_count\{handler="\/debug\/web\/metadata",method="GET",code="200"\} 1/)
      assert.match(text, /http_response_size_bytes_sum\{handler="\/debug\/web\/metadata",method="GET",code="200"\} [1-9]/)
    })
  })
})

describe('herd protection on the debug page', () => {
  const peerId = '12D3KooWself'
  const peerA = '12D3KooWpeerAAAAAAAAfollowed'
  // Ages relative to the request, so that they render predictably however slow the run.
  const events = (now = Date.now()): HerdEvent[] => [
    { digest: 'sha256:' + '1'.repeat(64), outcome: 'followed', peer: peerA, at: now - 5_000 },
    { digest: 'sha256:' + '2'.repeat(64), outcome: 'won', at: now - 65_000 },
    { digest: 'sha256:' + '3'.repeat(64), outcome: 'lost', peer: evil, at: now - 2 * 3_600_000 },
    { digest: `sha256:${evil}`, outcome: 'fallback', at: now - 1_000 },
  ]

  async function withApp (debugWeb: DebugWebSources, fn: (app: ReturnType<typeof createMetricsApp>) => Promise<void>): Promise<void> {
    const app = createMetricsApp({ metrics: new Metrics({ defaultMetrics: false }), logger, peerId, debugWeb })
    try {
      await fn(app)
    } finally {
      await app.close()
    }
  }

  it('lists each event with its short digest, outcome in words, shortened peer and age, on the page and in /stats', async () => {
    await withApp(sources({ herd: () => events() }), async (app) => {
      for (const path of ['/debug/web/', '/debug/web/stats']) {
        const body = (await app.inject(path)).body
        assert.match(body, /<h2>Herd protection<\/h2><table id="herd">/, path)
        const rows = [...body.matchAll(/<tr class="herd-event herd-(\w+)">(.*?)<\/tr>/g)]
        assert.deepEqual(rows.map((r) => r[1]), ['followed', 'won', 'lost', 'fallback'], path)
        const [followed, won, lost, fallback] = rows.map((r) => r[2] ?? '')
        assert.match(followed ?? '', /<td class="mono" title="sha256:1{64}">sha256:1{12}…<\/td>/)
        assert.match(followed ?? '', new RegExp(`streamed from <span class="mono" title="${peerA}">…${peerA.slice(-8)}</span> while it downloaded`))
        assert.match(followed ?? '', /<td>5\.\ds ago<\/td>/)
        assert.match(won ?? '', /downloaded here<\/span> \(others stream from this node\)/)
        assert.match(won ?? '', /<td>1m 5s ago<\/td>/)
        assert.match(lost ?? '', /a peer downloaded it; streamed from <span class="mono" title="&lt;script&gt;alert\(1\)&lt;\/script&gt;">…\/script&gt;<\/span>/)
        assert.match(lost ?? '', /<td>2h ago<\/td>/)
        assert.match(fallback ?? '', /could not follow; downloaded here/)
        assert.ok(!body.includes(evil), `${path}: untrusted values are escaped`)
        assert.ok(body.includes(`title="sha256:${escapeHtml(evil)}"`), path)
      }
    })
  })

  it('shows an empty state before any rollout, and no section without a herd source', async () => {
    await withApp(sources({ herd: () => [] }), async (app) => {
      const body = (await app.inject('/debug/web/')).body
      assert.match(body, /<table id="herd">.*<td colspan="3" class="empty">no rollout seen yet<\/td>/s)
      assert.deepEqual((await app.inject('/debug/web/status.json')).json().herd, [])
    })
    await withApp(sources(), async (app) => {
      assert.doesNotMatch((await app.inject('/debug/web/')).body, /Herd protection/)
      assert.equal((await app.inject('/debug/web/status.json')).json().herd, null)
    })
  })

  it('/debug/web/status.json carries the events, newest first, as given', async () => {
    const given = events()
    await withApp(sources({ herd: () => given }), async (app) => {
      const res = await app.inject('/debug/web/status.json')
      assert.equal(res.statusCode, 200)
      assert.deepEqual(res.json().herd, given)
    })
  })
})

describe('measure pull', () => {
  // Node A holds an image; node B holds only its config. B's registry gets the rest from A through a mirror.
  const storeA = new MemoryStore()
  const storeB = new MemoryStore()
  const network = new MemoryNetwork()
  const routerA = new MemoryRouter(network, { id: 'node-a', addresses: ['10.0.0.2'] })
  const routerB = new MemoryRouter(network, { id: 'node-b', addresses: ['10.0.0.3'] })
  const layer = Buffer.alloc(300_000, 7)
  const layerDigest = storeA.addBlob(layer, MediaType.ociLayerGzip)
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })
  const configDigest = storeA.addBlob(config, MediaType.ociConfig)
  storeB.addBlob(config, MediaType.ociConfig)
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length }, layers: [{ mediaType: MediaType.ociLayerGzip, digest: layerDigest, size: layer.length }] })
  const manifestDigest = storeA.addBlob(manifest, MediaType.ociManifest)
  const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [
    { mediaType: MediaType.ociManifest, digest: 'sha256:' + '9'.repeat(64), size: 10, platform: { os: 'linux', architecture: 'riscv64' } },
    { mediaType: MediaType.ociManifest, digest: manifestDigest, size: manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
  ] })
  const indexDigest = storeA.addBlob(index, MediaType.ociIndex)
  storeA.addImage('example.com/team/app:1.0', indexDigest)
  const fromA: Mirror = {
    fetch: async (req: MirrorRequest): Promise<MirrorResponse> => {
      const digest = req.path.digest ?? await storeA.resolve(tagReference(req.path.registry, req.path.repository, req.path.tag ?? ''))
      const d = await storeA.descriptor(digest)
      return { status: 200, headers: { 'content-type': d.mediaType, 'content-length': String(d.size), 'docker-content-digest': digest }, body: req.method === 'HEAD' ? undefined : Readable.from([await readAll(storeA, digest)]), peer: 'node-a' }
    },
  }
  const registryB = createRegistryApp({ store: storeB, logger, mirror: fromA })
  let registryUrl = ''

  before(async () => {
    await routerA.advertise(['example.com/team/app:1.0', indexDigest, manifestDigest, configDigest, layerDigest])
    registryUrl = await registryB.listen({ host: '127.0.0.1', port: 0 })
  })
  after(async () => { await registryB.close() })

  it('finds the providers, pulls the platform manifest, config and layers, and says where each came from', async () => {
    const result = await measurePull({ router: routerB, store: storeB, registryUrl, platform: { os: 'linux', architecture: 'amd64' } }, 'example.com/team/app:1.0')
    assert.equal(result.key, 'example.com/team/app:1.0')
    assert.deepEqual(result.lookup.peers.map((p) => p.id), ['node-a'])
    assert.ok(result.pull !== undefined)
    assert.equal(result.pull.error, undefined)
    assert.deepEqual(result.pull.items.map((i) => [i.kind, i.reference, i.source, i.status, i.size]), [
      ['index', '1.0', 'peer', 200, index.length],
      ['manifest', manifestDigest, 'peer', 200, manifest.length],
      ['config', configDigest, 'local', 200, config.length],
      ['layer', layerDigest, 'peer', 200, layer.length],
    ])
    assert.equal(result.pull.bytes, index.length + manifest.length + config.length + layer.length)
  })

  it('renders through the debug page; an image nobody has says so without pulling', async () => {
    const app = createMetricsApp({
      metrics: new Metrics({ defaultMetrics: false }),
      logger,
      peerId: 'node-b',
      debugWeb: { ...sources(), measure: async (image, options) => await measurePull({ router: routerB, store: storeB, registryUrl }, image, options) },
    })
    const found = await app.inject(`/debug/web/measure?image=${encodeURIComponent('example.com/team/app:1.0')}`)
    assert.equal(found.statusCode, 200)
    assert.match(found.body, /<table id="measure-pull">/)
    assert.equal((found.body.match(/<tr class="pulled">/g) ?? []).length, 4)
    const none = await app.inject('/debug/web/measure?image=nobody/has-this')
    assert.equal(none.statusCode, 200)
    assert.match(none.body, /docker\.io\/nobody\/has-this:latest/)
    assert.match(none.body, /No peers found for image/)
    await app.close()
  })
})

async function readAll (store: MemoryStore, digest: string): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of await store.open(digest)) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

describe('query-string validation without Ajv', () => {
  const compile = (schema: unknown, httpPart = 'querystring') => compileStringQuery({ schema, httpPart, method: 'GET', url: '/x' } as Parameters<typeof compileStringQuery>[0])

  it('accepts absent and short strings and rejects long or repeated ones', () => {
    const validate = compile({ type: 'object', properties: { q: { type: 'string', maxLength: 3 } } })
    assert.deepEqual(validate({}), { value: {} })
    assert.deepEqual(validate({ q: 'abc', other: 'x' }), { value: { q: 'abc', other: 'x' } })
    assert.equal((validate({ q: 'abcd' }) as { error: Error }).error.name, 'QueryValidationError')
    assert.equal((validate({ q: ['a', 'b'] }) as { error: Error }).error.name, 'QueryValidationError')
  })

  it('refuses, at registration, schemas it cannot check', () => {
    assert.throws(() => compile({ type: 'object', properties: { n: { type: 'integer' } } }))
    assert.throws(() => compile({ type: 'object', properties: { q: { type: 'string', pattern: '^a' } } }))
    assert.throws(() => compile({ type: 'object', required: ['q'], properties: { q: { type: 'string' } } }))
    assert.throws(() => compile({ type: 'object', properties: {} }, 'body'))
  })
})
