// Herd protection with three nodes on loopback (memory routers, memory stores, real sockets): each node's "containerd"
// is the test, which starts a download in that node's store when its mirror answers 404, as containerd then pulls
// from the upstream.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import type { FastifyInstance } from 'fastify'
import { Metrics } from '../../../src/metrics/index.ts'
import { HerdMirror, inflightKey } from '../../../src/registry/herd.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { PeerMirror } from '../../../src/registry/mirror.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { MemoryStore } from '../../../src/store/index.ts'

const logger = pino({ level: 'silent' })
const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

interface Node {
  name: string
  ip: string
  store: MemoryStore
  router: MemoryRouter
  metrics: Metrics
  herd: HerdMirror
  app: FastifyInstance
}

let subnet = 210
async function cluster (names: string[], options: { inflightStartWaitMs?: number } = {}): Promise<{ nodes: Node[], port: number, close: () => Promise<void> }> {
  const network = new MemoryNetwork()
  const net = subnet++
  const nodes: Node[] = []
  let port = 0
  for (const [i, name] of names.entries()) {
    const ip = `127.0.${net}.${i + 1}`
    const store = new MemoryStore()
    const router = new MemoryRouter(network, { id: name, addresses: [ip] })
    const metrics = new Metrics({ defaultMetrics: false })
    const mirror = new PeerMirror({ router, registryPort: port, logger, resolveTimeoutMs: 50, metrics })
    const herd = new HerdMirror({ mirror, router, logger, metrics })
    const app = createRegistryApp({ store, logger, mirror: herd, metrics, inflightStartWaitMs: options.inflightStartWaitMs ?? 2000 })
    await app.listen({ host: ip, port })
    if (port === 0) {
      port = (app.server.address() as AddressInfo).port
      // The first mirror learned the port only now.
      ;(mirror as unknown as { init: { registryPort: number } }).init.registryPort = port
    }
    nodes.push({ name, ip, store, router, metrics, herd, app })
  }
  return {
    nodes,
    port,
    close: async () => {
      for (const n of nodes) { n.herd.close(); await n.app.close() }
    },
  }
}

/** What the node's containerd does after its mirror said 404: downloads the blob "from upstream", in pieces. */
async function download (store: MemoryStore, blob: Buffer, options: { pieceMs?: number, corrupt?: boolean } = {}): Promise<void> {
  const dl = store.startDownload(sha(blob), blob.length)
  const bytes = options.corrupt === true ? Buffer.from(blob) : blob
  if (options.corrupt === true) bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 1
  for (let i = 0; i < bytes.length; i += 256 * 1024) {
    dl.append(bytes.subarray(i, i + 256 * 1024))
    await sleep(options.pieceMs ?? 10)
  }
}

async function outcomes (n: Node): Promise<Record<string, number>> {
  const text = await n.metrics.registry.metrics()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^spegel_herd_outcomes_total\{outcome="(\w+)"\} (\d+)/gm)) out[m[1] as string] = Number(m[2])
  return out
}

describe('herd protection', () => {
  it('nodes that miss the same blob at once: one downloads, the others stream its download', async (t) => {
    const c = await cluster(['a', 'b', 'c'])
    t.after(c.close)
    const blob = randomBytes(3 * 1024 * 1024 + 11)
    const downloads: Array<Promise<void>> = []
    const results = await Promise.all(c.nodes.map(async (n) => {
      const res = await fetch(`http://${n.ip}:${c.port}/v2/library/app/blobs/${sha(blob)}?ns=docker.io`)
      if (res.status === 404) {
        await res.arrayBuffer()
        downloads.push(download(n.store, blob))
        return { node: n.name, status: 404, body: undefined }
      }
      return { node: n.name, status: res.status, body: Buffer.from(await res.arrayBuffer()) }
    }))
    await Promise.all(downloads)
    const downloaders = results.filter((r) => r.status === 404).map((r) => r.node)
    assert.deepEqual(downloaders, ['a'], 'the lowest id won the election and downloaded alone')
    for (const r of results.filter((x) => x.status !== 404)) {
      assert.equal(r.status, 200, r.node)
      assert.ok(r.body !== undefined && sha(r.body) === sha(blob), `${r.node} got the right bytes`)
    }
    const a = await outcomes(c.nodes[0] as Node)
    assert.equal(a.won, 1)
    const others = [await outcomes(c.nodes[1] as Node), await outcomes(c.nodes[2] as Node)]
    for (const o of others) assert.equal((o.lost ?? 0) + (o.followed ?? 0), 1)
    assert.match(await (c.nodes[0] as Node).metrics.registry.metrics(), /spegel_inflight_served_total [12]/)
  })

  it('a node that arrives after the election streams the download without electing', async (t) => {
    const c = await cluster(['a', 'b'])
    t.after(c.close)
    const [a, b] = c.nodes as [Node, Node]
    const blob = randomBytes(2 * 1024 * 1024)
    const first = await fetch(`http://${b.ip}:${c.port}/v2/library/app/blobs/${sha(blob)}?ns=docker.io`)
    assert.equal(first.status, 404, 'alone, b downloads itself')
    await first.arrayBuffer()
    const downloading = download(b.store, blob, { pieceMs: 30 })
    const res = await fetch(`http://${a.ip}:${c.port}/v2/library/app/blobs/${sha(blob)}?ns=docker.io`)
    assert.equal(res.status, 200)
    assert.equal(sha(Buffer.from(await res.arrayBuffer())), sha(blob))
    await downloading
    assert.deepEqual(await outcomes(a), { followed: 1 })
  })

  it('a lone cold miss costs little: 404 at once, and the claim is visible to peers', async (t) => {
    const c = await cluster(['a', 'b'])
    t.after(c.close)
    const [a, b] = c.nodes as [Node, Node]
    const digest = sha(randomBytes(100))
    const started = performance.now()
    const res = await fetch(`http://${a.ip}:${c.port}/v2/library/app/blobs/${digest}?ns=docker.io`)
    const ms = performance.now() - started
    assert.equal(res.status, 404)
    assert.ok(ms < 500, `answered in ${Math.round(ms)} ms`)
    const claimants = []
    for await (const p of b.router.lookup(inflightKey(digest), { count: 5 })) claimants.push(p.id)
    assert.deepEqual(claimants, ['a'])
  })

  it('a winner whose download never starts costs a bounded wait, then the loser downloads itself', async (t) => {
    const c = await cluster(['a', 'b'], { inflightStartWaitMs: 300 })
    t.after(c.close)
    const [a, b] = c.nodes as [Node, Node]
    const digest = sha(randomBytes(100))
    // a claims and wins, but its "containerd" never downloads.
    assert.equal((await fetch(`http://${a.ip}:${c.port}/v2/library/app/blobs/${digest}?ns=docker.io`)).status, 404)
    const started = performance.now()
    const res = await fetch(`http://${b.ip}:${c.port}/v2/library/app/blobs/${digest}?ns=docker.io`)
    assert.equal(res.status, 404)
    assert.ok(performance.now() - started < 3000)
  })

  it('never hands over a wrong download as complete', async (t) => {
    const c = await cluster(['a', 'b'])
    t.after(c.close)
    const [a, b] = c.nodes as [Node, Node]
    const blob = randomBytes(2 * 1024 * 1024)
    const first = await fetch(`http://${a.ip}:${c.port}/v2/library/app/blobs/${sha(blob)}?ns=docker.io`)
    assert.equal(first.status, 404)
    const downloading = download(a.store, blob, { corrupt: true, pieceMs: 20 })
    const res = await fetch(`http://${b.ip}:${c.port}/v2/library/app/blobs/${sha(blob)}?ns=docker.io`)
    assert.equal(res.status, 200)
    await assert.rejects(res.arrayBuffer())
    await downloading
  })
})
