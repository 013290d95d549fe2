import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { Metrics } from '../../../src/metrics/index.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { PeerMirror } from '../../../src/registry/mirror.ts'
import { PeerConnection, PeerConnectionError, PeerResponseError, StallError, type BodyChunk, type PeerGetOptions } from '../../../src/registry/peer-client.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { MemoryStore } from '../../../src/store/index.ts'

const logger = pino({ level: 'silent' })
// Several pool buffers' worth, not a multiple of their size.
const blob = randomBytes(5 * 1024 * 1024 + 12345)
const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex')

/** A raw TCP server on 127.0.0.1 that answers every connection with `respond`. Returns its port and a closer. */
async function rawServer (respond: (socket: net.Socket, request: string) => void): Promise<{ port: number, requests: string[], close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const requests: string[] = []
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => sockets.delete(socket))
    let head = ''
    const onData = (d: Buffer): void => {
      head += d.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      requests.push(head)
      respond(socket, head)
    }
    socket.on('data', onData)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

function init (port: number, extra: Partial<PeerGetOptions> = {}): PeerGetOptions {
  return { host: '127.0.0.1', port, target: '/v2/x/blobs/y', headers: { 'x-spegel-mirrored': 'true' }, connectTimeoutMs: 300, stallTimeoutMs: 300, signal: new AbortController().signal, ...extra }
}

const okHead = (length: number): string => `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${length}\r\n\r\n`

/** Reads the whole body, releasing each chunk after `holdMs` (0: at once). */
/** Reads every chunk; the first `slowChunks` chunks are each held `holdMs` before being released. */
async function drain (conn: PeerConnection, holdMs = 0, slowChunks = Infinity): Promise<Buffer> {
  const parts: Buffer[] = []
  const held: BodyChunk[] = []
  for (;;) {
    const c = await conn.read()
    if (c === null) break
    parts.push(Buffer.from(c.data))
    held.push(c)
    if (holdMs > 0 && parts.length <= slowChunks) await new Promise((resolve) => setTimeout(resolve, holdMs))
    held.shift()?.release()
  }
  for (const c of held) c.release()
  return Buffer.concat(parts)
}

describe('peer client', () => {
  it('parses the head and delivers exactly Content-Length bytes across buffers', async (t) => {
    const srv = await rawServer((socket) => { socket.write(okHead(blob.length)); socket.end(Buffer.concat([blob, Buffer.from('trailing garbage')])) })
    t.after(srv.close)
    const conn = await PeerConnection.open(init(srv.port, { headers: { 'x-spegel-mirrored': 'true', authorization: 'Basic abc', range: 'bytes=1-' } }))
    assert.equal(conn.status, 200)
    assert.equal(conn.header('content-type'), 'application/octet-stream')
    assert.deepEqual(await drain(conn), blob)
    const req = srv.requests[0] ?? ''
    assert.match(req, /^GET \/v2\/x\/blobs\/y HTTP\/1\.1\r\n/)
    assert.match(req, /\r\nx-spegel-mirrored: true\r\n/)
    assert.match(req, /\r\nauthorization: Basic abc\r\n/)
    assert.match(req, /\r\nrange: bytes=1-\r\n/)
  })

  it('handles a head and body arriving in one packet, and an empty body', async (t) => {
    const small = Buffer.from('hello')
    const srv = await rawServer((socket, req) => {
      const empty = req.includes('empty')
      socket.end(Buffer.concat([Buffer.from(okHead(empty ? 0 : small.length)), empty ? Buffer.alloc(0) : small]))
    })
    t.after(srv.close)
    assert.deepEqual(await drain(await PeerConnection.open(init(srv.port))), small)
    assert.deepEqual(await drain(await PeerConnection.open(init(srv.port, { target: '/empty' }))), Buffer.alloc(0))
  })

  it('rejects chunked bodies and missing lengths cleanly', async (t) => {
    const srv = await rawServer((socket, req) => {
      if (req.includes('chunked')) socket.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n')
      else if (req.includes('nolength')) socket.end('HTTP/1.1 200 OK\r\n\r\nhello')
      else socket.end('garbage\r\n\r\n')
    })
    t.after(srv.close)
    await assert.rejects(PeerConnection.open(init(srv.port, { target: '/chunked' })), (e: Error) => e instanceof PeerResponseError && /Transfer-Encoding/.test(e.message))
    await assert.rejects(PeerConnection.open(init(srv.port, { target: '/nolength' })), (e: Error) => e instanceof PeerResponseError && /Content-Length/.test(e.message))
    await assert.rejects(PeerConnection.open(init(srv.port, { target: '/bad' })), (e: Error) => e instanceof PeerResponseError && /status line/.test(e.message))
  })

  it('answers error statuses without reading a body', async (t) => {
    const srv = await rawServer((socket) => { socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}') })
    t.after(srv.close)
    const conn = await PeerConnection.open(init(srv.port))
    assert.equal(conn.status, 404)
    assert.equal(await conn.read(), null)
  })

  it('hands out the bytes received before a broken connection, then fails', async (t) => {
    const sent = 1_500_000
    const srv = await rawServer((socket) => { socket.write(okHead(blob.length)); socket.write(blob.subarray(0, sent), () => { setTimeout(() => socket.destroy(), 20) }) })
    t.after(srv.close)
    const conn = await PeerConnection.open(init(srv.port))
    const parts: Buffer[] = []
    await assert.rejects(async () => {
      for (;;) {
        const c = await conn.read()
        if (c === null) break
        parts.push(Buffer.from(c.data))
        c.release()
      }
    }, PeerConnectionError)
    assert.deepEqual(Buffer.concat(parts), blob.subarray(0, sent))
  })

  it('times out a stalled peer, but not while the reader holds every buffer', async (t) => {
    const srv = await rawServer((socket, req) => {
      socket.write(okHead(blob.length))
      if (req.includes('stall')) socket.write(blob.subarray(0, 1000))
      else socket.end(blob)
    })
    t.after(srv.close)
    const stalled = await PeerConnection.open(init(srv.port, { target: '/stall', stallTimeoutMs: 150 }))
    await assert.rejects(drain(stalled), StallError)
    // The reader keeps chunks longer than the stall timeout (three times in a row is enough to tell): reading pauses,
    // which is not the peer's fault.
    const slowReader = await PeerConnection.open(init(srv.port, { stallTimeoutMs: 100 }))
    assert.deepEqual(await drain(slowReader, 150, 3), blob)
  })

  it('stops when its signal is aborted', async (t) => {
    const srv = await rawServer((socket) => { socket.write(okHead(blob.length)) })
    t.after(srv.close)
    const ac = new AbortController()
    const conn = await PeerConnection.open(init(srv.port, { signal: ac.signal, stallTimeoutMs: 5000 }))
    setTimeout(() => { ac.abort(new Error('client gone')) }, 20)
    await assert.rejects(conn.read(), /client gone/)
  })
})

describe('registry proxying blobs through the peer client', () => {
  async function start (t: { after: (fn: () => Promise<void>) => void }, peerServer: http.Server, ip: string, opts: { metrics?: Metrics } = {}): Promise<{ url: string, port: number }> {
    await new Promise<void>((resolve) => peerServer.listen(0, ip, resolve))
    const port = (peerServer.address() as AddressInfo).port
    const network = new MemoryNetwork()
    await new MemoryRouter(network, { id: 'peer', addresses: [ip] }).advertise([digest])
    const nodeIp = ip.replace(/\.\d+$/, '.1')
    const mirror = new PeerMirror({ router: new MemoryRouter(network, { id: 'node', addresses: [nodeIp] }), registryPort: port, logger, resolveTimeoutMs: 50, ...opts })
    const node = createRegistryApp({ store: new MemoryStore(), logger, mirror })
    await node.listen({ host: nodeIp, port })
    t.after(async () => {
      mirror.close()
      await node.close()
      peerServer.closeAllConnections()
      await new Promise((resolve) => peerServer.close(resolve))
    })
    return { url: `http://${nodeIp}:${port}/v2/library/app/blobs/${digest}`, port }
  }

  it('passes ranges through, suffix ranges included', async (t) => {
    const store = new MemoryStore()
    store.addBlob(blob)
    const peer = createRegistryApp({ store, logger })
    await peer.listen({ host: '127.0.201.2', port: 0 })
    const port = (peer.server.address() as AddressInfo).port
    const network = new MemoryNetwork()
    await new MemoryRouter(network, { id: 'peer', addresses: ['127.0.201.2'] }).advertise([digest])
    const mirror = new PeerMirror({ router: new MemoryRouter(network, { id: 'node', addresses: ['127.0.201.1'] }), registryPort: port, logger, resolveTimeoutMs: 50 })
    const node = createRegistryApp({ store: new MemoryStore(), logger, mirror })
    await node.listen({ host: '127.0.201.1', port })
    t.after(async () => { mirror.close(); await node.close(); await peer.close() })
    const url = `http://127.0.201.1:${port}/v2/library/app/blobs/${digest}`
    const mid = await fetch(url, { headers: { range: 'bytes=1000-2999999' } })
    assert.equal(mid.status, 206)
    assert.equal(mid.headers.get('content-range'), `bytes 1000-2999999/${blob.length}`)
    assert.deepEqual(Buffer.from(await mid.arrayBuffer()), blob.subarray(1000, 3_000_000))
    const tail = await fetch(url, { headers: { range: 'bytes=-700000' } })
    assert.equal(tail.status, 206)
    assert.deepEqual(Buffer.from(await tail.arrayBuffer()), blob.subarray(blob.length - 700_000))
  })

  it('cuts the response short and counts a verification failure when the peer lies', async (t) => {
    const metrics = new Metrics()
    const wrong = Buffer.from(blob)
    wrong[wrong.length - 1] = (wrong[wrong.length - 1] ?? 0) ^ 0xff
    const peer = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(wrong.length), 'docker-content-digest': digest })
      res.end(wrong)
    })
    const { url } = await start(t, peer, '127.0.202.2', { metrics })
    const res = await fetch(url)
    assert.equal(res.status, 200)
    let received = 0
    await assert.rejects(async () => {
      for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) received += c.length
    })
    assert.ok(received < blob.length, `received ${received} of ${blob.length}`)
    assert.equal((await metrics.verificationFailures.get()).values[0]?.value, 1)
  })

  it('closes the peer connection when a body is destroyed before it is read', async (t) => {
    let peerClosed: () => void = () => {}
    const closed = new Promise<void>((resolve) => { peerClosed = resolve })
    const peer = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(blob.length), 'docker-content-digest': digest })
      res.write(blob.subarray(0, 1000))
      res.once('close', () => { peerClosed() })
    })
    await new Promise<void>((resolve) => peer.listen(0, '127.0.204.2', resolve))
    const port = (peer.address() as AddressInfo).port
    const network = new MemoryNetwork()
    await new MemoryRouter(network, { id: 'peer', addresses: ['127.0.204.2'] }).advertise([digest])
    const mirror = new PeerMirror({ router: new MemoryRouter(network, { id: 'node', addresses: ['127.0.204.1'] }), registryPort: port, logger, resolveTimeoutMs: 50, stallTimeoutMs: 10_000 })
    t.after(async () => { mirror.close(); peer.closeAllConnections(); await new Promise((resolve) => peer.close(resolve)) })
    const res = await mirror.fetch({ path: { kind: 'blobs', repository: 'library/app', registry: 'docker.io', digest }, method: 'GET', signal: new AbortController().signal })
    res.body?.destroy()
    await Promise.race([closed, new Promise((_resolve, reject) => setTimeout(() => { reject(new Error('peer request still open 2s after the body was destroyed')) }, 2000))])
  })

  it('cancels the peer request when the client goes away', async (t) => {
    let peerClosed: () => void = () => {}
    const closed = new Promise<void>((resolve) => { peerClosed = resolve })
    const peer = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(blob.length), 'docker-content-digest': digest })
      // Sends the first megabyte, then trickles: the transfer is still running when the client leaves.
      res.write(blob.subarray(0, 1024 * 1024))
      const timer = setInterval(() => res.write(blob.subarray(0, 10)), 50)
      res.once('close', () => { clearInterval(timer); peerClosed() })
    })
    const { url } = await start(t, peer, '127.0.203.2')
    const ac = new AbortController()
    const res = await fetch(url, { signal: ac.signal })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    await reader.read()
    ac.abort()
    await Promise.race([closed, new Promise((_resolve, reject) => setTimeout(() => { reject(new Error('peer request still open 2s after the client left')) }, 2000))])
  })
})
