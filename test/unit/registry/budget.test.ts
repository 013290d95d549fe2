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
import { chunkSize } from '../../../src/registry/buffers.ts'
import { ConnectionLimits } from '../../../src/registry/connections.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { waitFor } from '../../helpers/wait.ts'

const logger = pino({ level: 'silent' })
const MiB = 1024 * 1024

describe('transfer budget', () => {
  it('admits while there is room, then refuses peers (here without a wait)', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const budget = new TransferBudget({ bytes: 2 * MiB, peerQueueTimeoutMs: 0, metrics })
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
    const budget = new TransferBudget({ bytes: MiB, queueTimeoutMs: 5_000, peerQueueTimeoutMs: 0 })
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

  it('lets a peer wait briefly, behind every request of this node', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const budget = new TransferBudget({ bytes: MiB, queueTimeoutMs: 5_000, peerQueueTimeoutMs: 300, metrics })
    const held = await budget.admit(MiB, 'node', 'local')
    const order: string[] = []
    const peer = budget.admit(MiB, 'peer', 'local').then((l) => { order.push('peer'); return l })
    await waitFor(() => budget.queued === 1, { timeoutMs: 1_000, what: 'the peer to queue' })
    const node = budget.admit(MiB, 'node', 'local').then((l) => { order.push('node'); return l })
    await waitFor(() => budget.queued === 2, { timeoutMs: 1_000, what: 'this node to queue' })
    held?.release()
    const nodeLease = await node
    assert.ok(nodeLease !== undefined)
    assert.deepEqual(order, ['node'], 'this node went ahead of the peer that asked first')
    const started = performance.now()
    assert.equal(await peer, undefined, 'the peer gave up after its queue timeout')
    assert.ok(performance.now() - started < 1_000)
    assert.match(await metrics.registry.metrics(), /spegel_transfer_rejections_total\{requester="peer",source="local",reason="timeout"\} 1/)
    nodeLease.release()
    assert.ok(await budget.admit(MiB, 'peer', 'local') !== undefined, 'a lone peer may use the whole budget')
  })

  it('keeps a quarter for this node\'s containerd, and does not count stalled transfers', async () => {
    const budget = new TransferBudget({ bytes: 4 * MiB, queueTimeoutMs: 0, peerQueueTimeoutMs: 0 })
    const peers = await Promise.all([1, 2, 3].map(async () => await budget.admit(MiB, 'peer', 'local')))
    assert.ok(peers.every((l) => l !== undefined))
    assert.equal(await budget.admit(MiB, 'peer', 'local'), undefined, 'peers stop at three quarters')
    const node = await budget.admit(MiB, 'node', 'local')
    assert.ok(node !== undefined, 'the last quarter is this node\'s')
    assert.equal(await budget.admit(MiB, 'node', 'local'), undefined)
    peers[0]!.stalled(true)
    assert.equal(budget.used, 3 * MiB)
    assert.equal(budget.stalled, MiB)
    const another = await budget.admit(MiB, 'node', 'local')
    assert.ok(another !== undefined, 'a stalled transfer makes room')
    peers[0]!.stalled(false)
    assert.equal(budget.used, 5 * MiB, 'moving again, it counts again, past the budget')
    peers[0]!.stalled(true)
    peers[0]!.release()
    assert.equal(budget.stalled, 0)
    assert.equal(budget.used, 4 * MiB)
  })

  it('lets stalled transfers off up to the size of the budget, and refuses (the caller ends it) beyond', async () => {
    const budget = new TransferBudget({ bytes: 2 * MiB, queueTimeoutMs: 0, peerQueueTimeoutMs: 0 })
    const leases = []
    for (let i = 0; i < 2; i++) {
      const l = await budget.admit(MiB, 'node', 'local')
      assert.ok(l !== undefined)
      assert.equal(l.stalled(true), true)
      leases.push(l)
    }
    assert.equal(budget.stalled, 2 * MiB)
    const third = await budget.admit(MiB, 'node', 'local')
    assert.ok(third !== undefined)
    assert.equal(third.stalled(true), false, 'the stalled ones already hold the whole budget')
    assert.equal(budget.used, MiB, 'a refused one keeps counting until it is ended')
    third.release()
    assert.equal(budget.used, 0)
    leases[0]!.release()
    assert.equal(budget.stalled, MiB)
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
  // Room for exactly one local transfer (two chunks, see sendfile.ts).
  const oneTransfer = 2 * chunkSize
  const budget = new TransferBudget({ bytes: oneTransfer, queueTimeoutMs: 200, peerQueueTimeoutMs: 100, metrics })
  let app: FastifyInstance
  let port = 0
  const url = (digest: string): string => `http://127.0.0.1:${port}/v2/library/app/blobs/${digest}?ns=docker.io`
  before(async () => {
    // A stuck client counts as stalled after 1.5 s and is cut off after 3 s.
    app = createRegistryApp({ store, logger, budget, metrics, stallTimeoutMs: 3_000, stalledAfterMs: 1_500 })
    await app.listen({ host: '127.0.0.1', port: 0 })
    port = (app.server.address() as AddressInfo).port
  })
  after(async () => { await app.close() })

  it('answers a peer 429 with Retry-After, this node\'s containerd 404 after a short wait, and small bodies always', async () => {
    const holder = await stuckGet(port, `/v2/library/app/blobs/${bigDigest}`)
    try {
      await waitFor(() => budget.used === oneTransfer, { timeoutMs: 2_000, what: 'the stuck transfer to hold the whole budget' })
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
    await waitFor(() => budget.used === 0 && budget.stalled === 0, { timeoutMs: 2_000, what: 'the hung-up transfer to release its reservation' })
    const res = await fetch(url(bigDigest), { headers: { 'X-Spegel-Mirrored': 'true' } })
    assert.equal(res.status, 200)
    assert.equal('sha256:' + createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex'), bigDigest)
  })

  it('admits a queued request of this node as soon as the transfer ahead of it ends', async () => {
    const holder = await stuckGet(port, `/v2/library/app/blobs/${bigDigest}`)
    try {
      await waitFor(() => budget.used === oneTransfer, { timeoutMs: 2_000, what: 'the stuck transfer to hold the whole budget' })
      const pending = fetch(url(bigDigest))
      await waitFor(() => budget.queued === 1, { timeoutMs: 2_000, what: 'the second request to queue' })
      holder.destroy()
      const res = await pending
      assert.equal(res.status, 200)
      assert.equal((await res.arrayBuffer()).byteLength, big.length)
    } finally {
      holder.destroy()
    }
  })

  it('stops counting a client that takes nothing, and cuts it off after the stall timeout', async () => {
    const timeoutsBefore = await counter(metrics, 'spegel_transfer_stall_timeouts_total')
    const holder = await stuckGet(port, `/v2/library/app/blobs/${bigDigest}`)
    holder.on('error', () => {})
    try {
      await waitFor(() => budget.used === oneTransfer, { timeoutMs: 2_000, what: 'the stuck transfer to hold the whole budget' })
      // Stalled: its reservation no longer counts, so a peer is served in full meanwhile.
      await waitFor(() => budget.used === 0 && budget.stalled === oneTransfer, { timeoutMs: 3_000, what: 'the stuck transfer to count as stalled', context: () => `used ${budget.used}, stalled ${budget.stalled}` })
      const res = await fetch(url(bigDigest), { headers: { 'X-Spegel-Mirrored': 'true' } })
      assert.equal(res.status, 200)
      assert.equal((await res.arrayBuffer()).byteLength, big.length)
      assert.match(await metrics.registry.metrics(), new RegExp(`spegel_transfer_buffer_bytes\\{state="stalled"\\} ${oneTransfer}`))
      // The stall timeout (3 s without progress) ends it. Its client does not see it while it reads nothing: the
      // FIN waits behind the bytes it never took. The server's side is gone.
      await waitFor(async () => await counter(metrics, 'spegel_transfer_stall_timeouts_total') === timeoutsBefore + 1, { timeoutMs: 5_000, what: 'the stall timeout to end the transfer' })
      await waitFor(async () => /spegel_http_connections\{state="active"\} 0/.test(await metrics.registry.metrics()), { timeoutMs: 2_000, what: 'the server to close the connection' })
      assert.equal(budget.stalled, 0)
      assert.equal(budget.used, 0)
    } finally {
      holder.destroy()
    }
  })
})

describe('registry with stalled transfers that fill the budget', () => {
  it('ends a transfer that stalls once the stalled ones hold as much as the budget, long before the stall timeout', async (t) => {
    const store = new MemoryStore()
    const big = randomBytes(8 * MiB)
    const digest = store.addBlob(big, MediaType.ociLayerGzip)
    const metrics = new Metrics({ defaultMetrics: false })
    const oneTransfer = 2 * chunkSize
    const budget = new TransferBudget({ bytes: oneTransfer, queueTimeoutMs: 200, peerQueueTimeoutMs: 100, metrics })
    // Stalled after 300 ms; the stall timeout (60 s) is far beyond this test.
    const app = createRegistryApp({ store, logger, budget, metrics, stallTimeoutMs: 60_000, stalledAfterMs: 300 })
    await app.listen({ host: '127.0.0.1', port: 0 })
    const sockets: net.Socket[] = []
    t.after(async () => { for (const s of sockets) s.destroy(); await app.close() })
    const port = (app.server.address() as AddressInfo).port
    const path = `/v2/library/app/blobs/${digest}`
    const stuck = async (): Promise<net.Socket> => {
      const s = await stuckGet(port, path)
      s.on('error', () => {})
      sockets.push(s)
      return s
    }
    await stuck()
    await waitFor(() => budget.stalled === oneTransfer && budget.used === 0, { timeoutMs: 3_000, what: 'the first stuck transfer to count as stalled', context: () => `used ${budget.used}, stalled ${budget.stalled}` })
    const started = performance.now()
    const second = await stuck()
    let closedAt = 0
    second.once('close', () => { closedAt = performance.now() })
    // The second one stalls too; the stalled ones already hold the whole budget, so it is ended at once.
    await waitFor(async () => await counter(metrics, 'spegel_transfer_stall_timeouts_total') === 1, { timeoutMs: 5_000, what: 'the second stuck transfer to be ended' })
    assert.ok(performance.now() - started < 5_000, 'ended long before the stall timeout')
    assert.equal(budget.stalled, oneTransfer, 'the first one is still stalled, not ended')
    assert.equal(budget.used, 0, 'nothing stalled counts against the transfers that move')
    // Its client sees the connection end once it reads (the FIN waits behind the bytes it never took).
    second.resume()
    await waitFor(() => closedAt > 0, { timeoutMs: 5_000, what: 'the second client to see its connection closed' })
    // A peer is served in full meanwhile.
    const res = await fetch(`http://127.0.0.1:${port}${path}?ns=docker.io`, { headers: { 'X-Spegel-Mirrored': 'true' } })
    assert.equal(res.status, 200)
    assert.equal((await res.arrayBuffer()).byteLength, big.length)
    assert.equal(await counter(metrics, 'spegel_transfer_rejections_total'), 0)
  })
})

async function counter (metrics: Metrics, name: string): Promise<number> {
  const line = (await metrics.registry.metrics()).split('\n').find((l) => l.startsWith(name + ' '))
  return Number(line?.split(' ')[1] ?? 0)
}

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
