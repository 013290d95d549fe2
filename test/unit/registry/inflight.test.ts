// Serving a blob this node is still downloading, to a peer that asks for it with `X-Spegel-Inflight: accept`.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import type { FastifyInstance } from 'fastify'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { MemoryStore } from '../../../src/store/index.ts'

const logger = pino({ level: 'silent' })
const blob = randomBytes(2 * 1024 * 1024 + 3)
const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex')
const inflight = { 'x-spegel-mirrored': 'true', 'x-spegel-inflight': 'accept' }

describe('a download in progress, served to peers', () => {
  let app: FastifyInstance
  let store: MemoryStore
  let url = ''
  before(async () => {
    store = new MemoryStore()
    app = createRegistryApp({ store, logger })
    await app.listen({ host: '127.0.0.1', port: 0 })
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/v2/library/app/blobs/${digest}?ns=docker.io`
  })
  after(async () => { await app.close() })

  it('streams the bytes as they arrive to a peer that accepts them, and only to such a peer', async () => {
    const dl = store.startDownload(digest, blob.length)
    dl.append(blob.subarray(0, 1000))
    assert.equal((await fetch(url, { headers: { 'x-spegel-mirrored': 'true' } })).status, 404, 'a plain peer request (Go Spegel) never gets partial content')
    assert.equal((await fetch(url)).status, 404, 'nor does this node\'s containerd')
    const head = await fetch(url, { method: 'HEAD', headers: inflight })
    assert.equal(head.status, 200)
    assert.equal(head.headers.get('x-spegel-inflight'), 'true')
    assert.equal(head.headers.get('content-length'), String(blob.length))
    assert.equal(head.headers.get('docker-content-digest'), digest)
    const res = await fetch(url, { headers: inflight })
    assert.equal(res.status, 200)
    const reading = res.arrayBuffer()
    for (let i = 1000; i < blob.length; i += 300_000) {
      await sleep(5)
      dl.append(blob.subarray(i, i + 300_000))
    }
    assert.deepEqual(Buffer.from(await reading), blob)
    // Complete now: ordinary content.
    const after = await fetch(url, { headers: { 'x-spegel-mirrored': 'true' } })
    assert.equal(after.status, 200)
    assert.equal(after.headers.get('x-spegel-inflight'), null)
    await after.arrayBuffer()
  })

  it('cuts the body short when the download is abandoned, so it never looks complete', async () => {
    const other = randomBytes(500_000)
    const otherDigest = 'sha256:' + createHash('sha256').update(other).digest('hex')
    const dl = store.startDownload(otherDigest, other.length)
    dl.append(other.subarray(0, 100_000))
    const res = await fetch(url.replace(digest, otherDigest), { headers: inflight })
    assert.equal(res.status, 200)
    setTimeout(() => { dl.abort() }, 20)
    await assert.rejects(res.arrayBuffer())
  })
})
