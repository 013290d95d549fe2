// The full header set of every answer a client can get, local and through a peer, for manifests and blobs, GET and
// HEAD: a header lost on one path (a HEAD through a peer without Docker-Content-Digest, say) fails here, not only in
// the slow containerd end-to-end tests.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { startPeerPair, type PeerPair } from './peer-pair.ts'

const sha = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const layer = randomBytes(300_000)
const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })
const manifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: sha(config), size: config.length },
  layers: [{ mediaType: MediaType.ociLayerGzip, digest: sha(layer), size: layer.length }],
})
/** Headers that say nothing about the content. */
const transport = new Set(['date', 'connection', 'keep-alive'])

function headersOf (res: Response): Record<string, string> {
  const out: Record<string, string> = {}
  res.headers.forEach((value, name) => { if (!transport.has(name)) out[name] = value })
  return out
}

describe('response headers, local and through a peer', () => {
  let pair: PeerPair
  let port = 0
  before(async () => {
    const store = new MemoryStore()
    store.addBlob(layer, MediaType.ociLayerGzip)
    store.addBlob(config, MediaType.ociConfig)
    store.addBlob(manifest, MediaType.ociManifest)
    store.addImage('docker.io/library/app:1.0', sha(manifest))
    pair = await startPeerPair(store, [sha(layer), sha(config), sha(manifest), 'docker.io/library/app:1.0'], { subnet: 202 })
    port = pair.port
  })
  after(async () => { await pair.close() })

  const common = { 'docker-distribution-api-version': 'registry/2.0' }
  const cases: Array<{ name: string, path: string, range?: string, status: number, headers: Record<string, string>, body: Buffer }> = [
    {
      name: 'manifest by tag',
      path: '/v2/library/app/manifests/1.0?ns=docker.io',
      status: 200,
      headers: { ...common, 'content-type': MediaType.ociManifest, 'content-length': String(manifest.length), 'docker-content-digest': sha(manifest), 'oci-namespace': 'docker.io' },
      body: Buffer.from(manifest),
    },
    {
      name: 'manifest by digest',
      path: `/v2/library/app/manifests/${sha(manifest)}?ns=docker.io`,
      status: 200,
      headers: { ...common, 'content-type': MediaType.ociManifest, 'content-length': String(manifest.length), 'docker-content-digest': sha(manifest), 'oci-namespace': 'docker.io' },
      body: Buffer.from(manifest),
    },
    {
      name: 'config blob',
      path: `/v2/library/app/blobs/${sha(config)}?ns=docker.io`,
      status: 200,
      headers: { ...common, 'content-type': MediaType.ociConfig, 'content-length': String(config.length), 'docker-content-digest': sha(config), 'oci-namespace': 'docker.io', 'accept-ranges': 'bytes' },
      body: Buffer.from(config),
    },
    {
      name: 'layer blob',
      path: `/v2/library/app/blobs/${sha(layer)}?ns=docker.io`,
      status: 200,
      headers: { ...common, 'content-type': MediaType.ociLayerGzip, 'content-length': String(layer.length), 'docker-content-digest': sha(layer), 'oci-namespace': 'docker.io', 'accept-ranges': 'bytes' },
      body: layer,
    },
    {
      name: 'layer blob, range to the end (a resume)',
      path: `/v2/library/app/blobs/${sha(layer)}?ns=docker.io`,
      range: 'bytes=1000-',
      status: 206,
      headers: { ...common, 'content-type': MediaType.octetStream, 'content-length': String(layer.length - 1000), 'content-range': `bytes 1000-${layer.length - 1}/${layer.length}`, 'docker-content-digest': sha(layer), 'oci-namespace': 'docker.io', 'accept-ranges': 'bytes' },
      body: layer.subarray(1000),
    },
    {
      name: 'layer blob without ns',
      path: `/v2/library/app/blobs/${sha(layer)}`,
      status: 200,
      headers: { ...common, 'content-type': MediaType.ociLayerGzip, 'content-length': String(layer.length), 'docker-content-digest': sha(layer), 'accept-ranges': 'bytes' },
      body: layer,
    },
  ]
  for (const source of ['local', 'peer'] as const) {
    for (const c of cases) {
      for (const method of ['GET', 'HEAD'] as const) {
        it(`${method} ${c.name} (${source}): exactly the expected headers${method === 'GET' ? ' and body' : ''}`, async () => {
          const host = source === 'local' ? '127.0.202.2' : '127.0.202.1'
          const res = await fetch(`http://${host}:${port}${c.path}`, { method, headers: c.range !== undefined ? { range: c.range } : {} })
          assert.equal(res.status, c.status)
          assert.deepEqual(headersOf(res), c.headers)
          const body = Buffer.from(await res.arrayBuffer())
          assert.deepEqual(body, method === 'GET' ? c.body : Buffer.alloc(0))
        })
      }
    }
  }
})
