import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Metrics } from '../../../src/metrics/index.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { TagConfirmer } from '../../../src/registry/upstream.ts'
import type { HttpRequest } from '../../../src/util/http-client.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { startPeerPair } from './peer-pair.ts'

/** A peer holding docker.io/library/app:v1, advertised under its tag and digest. */
function peerWithTag (): { store: MemoryStore, digest: string } {
  const store = new MemoryStore()
  const config = store.addBlob(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }))
  const digest = store.addBlob(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: config, size: 1 }, layers: [] }), MediaType.ociManifest)
  store.addImage('docker.io/library/app:v1', digest)
  return { store, digest }
}

/** What the fake upstream answers to a manifest HEAD, and how often it was asked. */
function upstream (answer: () => Answer): { request: HttpRequest, asked: string[] } {
  const asked: string[] = []
  return {
    asked,
    request: async (url) => {
      asked.push(String(url))
      const { status, headers = {} } = answer()
      return { status, header: (name) => headers[name.toLowerCase()], text: async () => '', discard: () => {} }
    },
  }
}

interface Answer { status: number, headers?: Record<string, string> }

const outcomes = async (metrics: Metrics): Promise<Record<string, number>> =>
  Object.fromEntries((await metrics.tagChecks.get()).values.map((v) => [String(v.labels.outcome), v.value]))

describe('a tag resolved by peers is confirmed with the upstream before containerd gets it', () => {
  const cases: Array<{ name: string, answer: (digest: string) => () => Answer, status: number, outcome: string }> = [
    { name: 'the upstream names the same digest: served', answer: (d) => () => ({ status: 200, headers: { 'docker-content-digest': d } }), status: 200, outcome: 'confirmed' },
    { name: 'the upstream names another digest: 404', answer: () => () => ({ status: 200, headers: { 'docker-content-digest': 'sha256:' + 'f'.repeat(64) } }), status: 404, outcome: 'differs' },
    { name: 'the upstream will not say (401 without a challenge): 404', answer: () => () => ({ status: 401 }), status: 404, outcome: 'unconfirmable' },
    { name: 'the upstream does not have the tag: 404', answer: () => () => ({ status: 404 }), status: 404, outcome: 'unconfirmable' },
    { name: 'the upstream cannot be reached: the peers\' answer is served', answer: () => () => { throw new Error('connect ECONNREFUSED') }, status: 200, outcome: 'unreachable' },
  ]
  for (const [i, c] of cases.entries()) {
    it(c.name, async () => {
      const { store, digest } = peerWithTag()
      const metrics = new Metrics({ defaultMetrics: false })
      const fake = upstream(c.answer(digest))
      const pair = await startPeerPair(store, ['docker.io/library/app:v1', digest], { subnet: 210 + i, metrics, tags: new TagConfirmer({ registries: [], request: fake.request }) })
      try {
        for (const method of ['HEAD', 'GET']) {
          const res = await fetch(`${pair.nodeUrl}/v2/library/app/manifests/v1?ns=docker.io`, { method })
          const body = await res.text()
          assert.equal(res.status, c.status, `${method}: ${body}`)
          if (c.status === 200) assert.equal(res.headers.get('docker-content-digest'), digest)
          else if (method === 'GET') assert.equal((JSON.parse(body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'MANIFEST_UNKNOWN')
        }
        assert.equal(fake.asked[0], 'https://registry-1.docker.io/v2/library/app/manifests/v1', 'Docker Hub\'s API host')
        assert.ok((await outcomes(metrics))[c.outcome]! >= 1, JSON.stringify(await outcomes(metrics)))
        // A digest needs no confirmation: containerd verifies it.
        const before = fake.asked.length
        assert.equal((await fetch(`${pair.nodeUrl}/v2/library/app/manifests/${digest}?ns=docker.io`)).status, 200)
        assert.equal(fake.asked.length, before, 'no upstream request for a digest')
      } finally {
        await pair.close()
      }
    })
  }

  it('a tag without a registry (no ?ns=) cannot be confirmed: 404, and the upstream is not asked', async () => {
    const { store, digest } = peerWithTag()
    const fake = upstream(() => ({ status: 200, headers: { 'docker-content-digest': digest } }))
    // What the peer advertises for a tag asked without ?ns=.
    const metrics = new Metrics({ defaultMetrics: false })
    const pair = await startPeerPair(store, ['/library/app:v1', 'docker.io/library/app:v1'], { subnet: 219, metrics, tags: new TagConfirmer({ registries: [], request: fake.request }) })
    try {
      const res = await fetch(`${pair.nodeUrl}/v2/library/app/manifests/v1`)
      await res.arrayBuffer()
      assert.equal(res.status, 404)
      assert.deepEqual(fake.asked, [])
      assert.deepEqual(await outcomes(metrics), { unconfirmable: 1 }, 'a peer answered, and its answer was not taken')
    } finally {
      await pair.close()
    }
  })
})
