import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { describe, it, after, before } from 'node:test'
import { pino } from 'pino'
import type { FastifyInstance } from 'fastify'
import { Metrics } from '../../../src/metrics/index.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { TransferBudget, defaultTransferBudget } from '../../../src/registry/budget.ts'
import { ConnectionLimits } from '../../../src/registry/connections.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { waitFor } from '../../helpers/wait.ts'

const logger = pino({ level: 'silent' })
const MiB = 1024 * 1024

describe('transfer budget', () => {
  it('admits while there is room, then refuses peers at once', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const budget = new TransferBudget({ bytes: 2 * MiB, metrics })
    const a = await budget.admit(MiB, 'peer', 'local')
    const b = await budget.admit(MiB, 'node', 'peer')
    assert.ok(a !== undefined && b !== undefined)
    assert.equal(budget.used, 2 * MiB)
    const started = performance.now()
    assert.equal(await budget.admit(MiB, 'peer', 'local'), undefined)
    assert.ok(performance.now() - started < 50, 'a peer does not wait')
    assert.match(await metrics.registry.metrics(), /spegel_transfer_rejections_total\{requester="peer",source="local",reason="full"\} 1/)
    a.release()
    a.release()
    assert.equal(budget.used, MiB, 'release is idempotent')
  })

  it('queues this node\'s requests in arrival order and admits them as room comes back', async () => {
    const budget = new TransferBudget({ bytes: MiB, queueTimeoutMs: 5_000 })
    const first = await budget.admit(MiB, 'node', 'local')
    assert.ok(first !== undefined)
    const order: number[] = []
    const waiting = [1, 2].map(async (n) => { const l = await budget.admit(MiB, 'node', 'local'); order.push(n); return l })
    await waitFor(() => budget.queued === 2, { timeoutMs: 1_000, what: 'both requests queued' })
    assert.equal(await budget.admit(1, 'peer', 'local'), undefined, 'a peer does not jump the line')
    first.release()
    const second = await waiting[0]
    assert.deepEqual(order, [1])
    second?.release()
    ;(await waiting[1])?.release()
    assert.deepEqual(order, [1, 2])
    assert.equal(budget.used, 0)
  })

  it('gives up on a queued request after the queue timeout, and when its client goes away', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const budget = new TransferBudget({ bytes: MiB, queueTimeoutMs: 100, metrics })
    const held = await budget.admit(MiB, 'node', 'local')
    const started = performance.now()
    assert.equal(await budget.admit(MiB, 'node', 'peer'), undefined)
    const waited = performance.now() - started
    assert.ok(waited >= 90 && waited < 1000, `waited ${waited} ms`)
    const ac = new AbortController()
    const cancelled = budget.admit(MiB, 'node', 'local', ac.signal)
    await waitFor(() => budget.queued === 1, { timeoutMs: 1_000, what: 'the request to queue' })
    ac.abort()
    assert.equal(await cancelled, undefined)
    assert.equal(budget.queued, 0)
    const text = await metrics.registry.metrics()
    assert.match(text, /spegel_transfer_rejections_total\{requester="node",source="peer",reason="timeout"\} 1/)
    assert.doesNotMatch(text, /reason="cancelled"/)
    assert.match(text, /spegel_transfer_queue_duration_seconds_count\{outcome="timeout"\} 2/)
    held?.release()
  })

  it('lets a request larger than the whole budget run alone', async () => {
    const budget = new TransferBudget({ bytes: MiB })
    const big = await budget.admit(10 * MiB, 'peer', 'local')
    assert.equal(big?.bytes, MiB)
  })

  it('is derived from the memory limit', () => {
    assert.equal(defaultTransferBudget(128 * MiB), 16 * MiB)
    assert.equal(defaultTransferBudget(512 * MiB), 208 * MiB)
    assert.equal(defaultTransferBudget(64 * MiB), 8 * MiB, 'never below 8 MiB')
    assert.equal(defaultTransferBudget(undefined), 256 * MiB)
    assert.equal(defaultTransferBudget(2 ** 62), 256 * MiB, 'cgroup v1 reports "no limit" as a huge number')
  })
})

/** Sends a raw GET and never reads the answer, so a large response cannot finish. Returns the socket. */
async function stuckGet (port: number, path: string, headers: Record<string, string> = {}): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.pause()
  let request = `GET ${path} HTTP/1.1\r\nHost: x\r\n`
  for (const [k, v] of Object.entries(headers)) request += `${k}: ${v}\r\n`
  socket.write(request + '\r\n')
  return socket
}

describe('registry under a full transfer budget', () => {
  const store = new MemoryStore()
  const big = randomBytes(32 * MiB)
  const bigDigest = store.addBlob(big, MediaType.ociLayerGzip)
  const small = randomBytes(1000)
  const smallDigest = store.addBlob(small, MediaType.ociLayerGzip)
  const metrics = new Metrics({ defaultMetrics: false })
  // Room for exactly one local transfer.
  const budget = new TransferBudget({ bytes: MiB, queueTimeoutMs: 200, metrics })
  let app: FastifyInstance
  let port = 0
  const url = (digest: string): string => `http://127.0.0.1:${port}/v2/library/app/blobs/${digest}?ns=docker.io`
  before(async () => {
    app = createRegistryApp({ store, logger, budget, metrics })
    await app.listen({ host: '127.0.0.1', port: 0 })
    port = (app.server.address() as AddressInfo).port
  })
  after(async () => { await app.close() })

  it('answers a peer 429 with Retry-After, this node\'s containerd 404 after a short wait, and small bodies always', async () => {
    const holder = await stuckGet(port, `/v2/library/app/blobs/${bigDigest}`)
    try {
      await waitFor(() => budget.used === MiB, { timeoutMs: 2_000, what: 'the stuck transfer to hold the whole budget' })
      const peer = await fetch(url(bigDigest), { headers: { 'X-Spegel-Mirrored': 'true' } })
      assert.equal(peer.status, 429)
      assert.equal(peer.headers.get('retry-after'), '1')
      assert.equal((await peer.json() as { errors: Array<{ code: string }> }).errors[0]?.code, 'TOOMANYREQUESTS')
      const started = performance.now()
      const node = await fetch(url(bigDigest))
      assert.equal(node.status, 404)
      assert.ok(performance.now() - started >= 150, 'this node\'s request waited in line first')
      assert.equal((await node.json() as { errors: Array<{ code: string }> }).errors[0]?.code, 'BLOB_UNKNOWN')
      const tiny = await fetch(url(smallDigest), { headers: { 'X-Spegel-Mirrored': 'true' } })
      assert.equal(tiny.status, 200)
      assert.deepEqual(Buffer.from(await tiny.arrayBuffer()), small)
      const head = await fetch(url(bigDigest), { method: 'HEAD', headers: { 'X-Spegel-Mirrored': 'true' } })
      assert.equal(head.status, 200, 'HEAD needs no transfer memory')
    } finally {
      holder.destroy()
    }
    // The hung-up transfer gives its reservation back.
    await waitFor(() => budget.used === 0, { timeoutMs: 2_000, what: 'the hung-up transfer to release its reservation' })
    const res = await fetch(url(bigDigest), { headers: { 'X-Spegel-Mirrored': 'true' } })
    assert.equal(res.status, 200)
    assert.equal('sha256:' + createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex'), bigDigest)
  })

  it('admits a queued request of this node as soon as the transfer ahead of it ends', async () => {
    const holder = await stuckGet(port, `/v2/library/app/blobs/${bigDigest}`)
    await waitFor(() => budget.used === MiB, { timeoutMs: 2_000, what: 'the stuck transfer to hold the whole budget' })
    const pending = fetch(url(bigDigest))
    await waitFor(() => budget.queued === 1, { timeoutMs: 2_000, what: 'the second request to queue' })
    holder.destroy()
    const res = await pending
    assert.equal(res.status, 200)
    assert.equal((await res.arrayBuffer()).byteLength, big.length)
  })
})

describe('connection limits', () => {
  it('closes the connections idle longest beyond the cap, never one with a request in progress', async (t) => {
    const metrics = new Metrics({ defaultMetrics: false })
    let release: (() => void) | undefined
    const server = http.createServer((req, res) => {
      if (req.url === '/slow') release = () => { res.end('done') }
      else res.end('ok')
    })
    const limits = new ConnectionLimits(server, { maxIdle: 3, metrics })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.after(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
    const port = (server.address() as AddressInfo).port
    // Registered after the limits' own listener: once it fires, the limits know the connection.
    let accepted = 0
    server.on('connection', () => { accepted++ })
    const busy = await stuckGet(port, '/slow')
    await waitFor(() => limits.stats().active === 1, { timeoutMs: 2_000, what: 'the slow request in progress' })
    const sockets: net.Socket[] = []
    const closed = new Set<number>()
    for (let i = 0; i < 8; i++) {
      const s = net.connect({ host: '127.0.0.1', port })
      const index = i
      s.on('close', () => closed.add(index))
      s.on('error', () => {})
      await new Promise<void>((resolve) => s.once('connect', resolve))
      sockets.push(s)
      // Idle order is arrival order at the server: the next one connects after this one was accepted.
      await waitFor(() => accepted === i + 2, { timeoutMs: 2_000, what: `connection ${i} accepted` })
    }
    await waitFor(() => closed.size === 5, { timeoutMs: 2_000, what: 'five idle connections closed', context: () => JSON.stringify([...closed]) })
    assert.deepEqual([...closed].sort(), [0, 1, 2, 3, 4], 'the five oldest idle connections were closed')
    assert.deepEqual(limits.stats(), { active: 1, idle: 3 })
    assert.equal(busy.destroyed, false)
    release?.()
    assert.match(await metrics.registry.metrics(), /spegel_http_connections_closed_total\{reason="idle_limit"\} 5/)
    for (const s of sockets) s.destroy()
    busy.destroy()
  })
})
