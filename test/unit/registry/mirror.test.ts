import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, it, before, after } from 'node:test'
import { pino } from 'pino'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { PeerMirror } from '../../../src/registry/mirror.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import type { LookupOptions, Peer, Router } from '../../../src/routing/types.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import type { FastifyInstance } from 'fastify'

const logger = pino({ level: 'silent' })
const blob = randomBytes(3 * 1024 * 1024 + 17)
const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex')

type Behaviour = 'good' | 'slow' | 'flaky' | 'stall' | 'liar' | 'liarMid' | 'error500' | 'busy' | 'muteAfterFirst'
/** Where 'liarMid' flips a byte: inside the blob, far from both ends. */
const lieAt = 2 * 1024 * 1024 + 5

/** A fake peer registry on 127.0.0.<n>:port that serves `blob` with a given misbehaviour. */
async function startPeer (ip: string, port: number, behaviour: Behaviour): Promise<http.Server> {
  let requests = 0
  const server = http.createServer((req, res) => {
    assert.equal(req.headers['x-spegel-mirrored'], 'true')
    // Answers once, then goes silent without closing anything: a node that died behind a kept-alive connection.
    if (behaviour === 'muteAfterFirst' && ++requests > 1) return
    if (behaviour === 'error500') { res.writeHead(500).end(); return }
    if (behaviour === 'busy') { res.writeHead(429, { 'retry-after': '1', 'content-type': 'application/json' }).end('{"errors":[{"code":"TOOMANYREQUESTS","message":"busy"}]}'); return }
    let start = 0
    let end = blob.length - 1
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '')
    const headers: Record<string, string> = { 'content-type': MediaType.ociLayerGzip, 'docker-content-digest': digest }
    if (range !== null) {
      if (range[1] === '') start = blob.length - Number(range[2])
      else {
        start = Number(range[1])
        if (range[2] !== '') end = Math.min(Number(range[2]), blob.length - 1)
      }
      headers['content-range'] = `bytes ${start}-${end}/${blob.length}`
    }
    headers['content-length'] = String(end - start + 1)
    const send = (): void => {
      res.writeHead(range !== null ? 206 : 200, headers)
      if (req.method === 'HEAD') { res.end(); return }
      const body = blob.subarray(start, end + 1)
      if (behaviour === 'flaky' || behaviour === 'stall') {
        res.write(body.subarray(0, Math.floor(body.length * 0.4)))
        if (behaviour === 'flaky') setTimeout(() => res.destroy(), 10)
        return // stall: never finish
      }
      if (behaviour === 'liarMid') {
        const wrong = Buffer.from(body)
        if (lieAt >= start && lieAt <= end) wrong[lieAt - start] = (wrong[lieAt - start] ?? 0) ^ 0x01
        res.end(wrong)
        return
      }
      if (behaviour === 'liar') {
        const wrong = Buffer.from(body)
        wrong[wrong.length - 1] = (wrong[wrong.length - 1] ?? 0) ^ 0xff
        res.end(wrong)
        return
      }
      res.end(body)
    }
    if (behaviour === 'slow') setTimeout(send, 1500)
    else send()
  })
  await new Promise<void>((resolve) => server.listen(port, ip, resolve))
  return server
}

interface Setup {
  mirror: PeerMirror
  servers: http.Server[]
  close: () => Promise<void>
}

let nextIp = 10
async function setup (behaviours: Behaviour[], opts: { stallTimeoutMs?: number, wrapRouter?: (router: Router) => Router } = {}): Promise<Setup> {
  const probe = http.createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>((resolve) => probe.close(() => { resolve() }))
  const network = new MemoryNetwork()
  const servers: http.Server[] = []
  for (const [i, b] of behaviours.entries()) {
    const ip = `127.0.${nextIp}.${i + 1}`
    servers.push(await startPeer(ip, port, b))
    const router = new MemoryRouter(network, { id: `peer-${i}-${b}`, addresses: [ip] })
    await router.advertise([digest])
  }
  nextIp++
  const self = new MemoryRouter(network, { id: 'self', addresses: ['127.0.0.1'] })
  const mirror = new PeerMirror({ router: opts.wrapRouter?.(self) ?? self, registryPort: port, logger, resolveTimeoutMs: 50, stallTimeoutMs: opts.stallTimeoutMs ?? 300, resolveRetries: 4 })
  return {
    mirror,
    servers,
    close: async () => {
      mirror.close()
      await Promise.all(servers.map(async (s) => { s.closeAllConnections(); await new Promise((resolve) => s.close(resolve)) }))
    },
  }
}

async function readAll (body: NodeJS.ReadableStream | undefined): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of body as AsyncIterable<Buffer>) chunks.push(c)
  return Buffer.concat(chunks)
}

const blobPath = { kind: 'blobs' as const, repository: 'library/app', registry: 'docker.io', digest }

describe('peer mirror', () => {
  it('streams a blob from a good peer', async (t) => {
    const s = await setup(['good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], String(blob.length))
    assert.equal(res.headers['docker-content-digest'], digest)
    assert.deepEqual(await readAll(res.body), blob)
  })

  it('answers HEAD with headers only', async (t) => {
    const s = await setup(['good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'HEAD', signal: new AbortController().signal })
    assert.equal(res.status, 200)
    assert.equal(res.body, undefined)
    assert.equal(res.headers['content-length'], String(blob.length))
  })

  it('passes a range through, suffix ranges included', async (t) => {
    const s = await setup(['good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', range: { start: 10, end: 19 }, signal: new AbortController().signal })
    assert.equal(res.status, 206)
    assert.equal(res.headers['content-range'], `bytes 10-19/${blob.length}`)
    assert.deepEqual(await readAll(res.body), blob.subarray(10, 20))
  })

  it('asks peers for the whole blob and cuts the range out, so the range is verified', async (t) => {
    const s = await setup(['good'])
    t.after(s.close)
    const ranges: Array<string | undefined> = []
    s.servers[0]?.on('request', (req: http.IncomingMessage) => { ranges.push(req.headers.range) })
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', range: { start: lieAt - 3, end: lieAt + 3 }, signal: new AbortController().signal })
    assert.equal(res.status, 206)
    assert.equal(res.headers['content-length'], '7')
    assert.deepEqual(await readAll(res.body), blob.subarray(lieAt - 3, lieAt + 4))
    assert.deepEqual(ranges, [undefined])
  })

  for (const [name, range] of [
    ['a range inside the blob', { start: lieAt - 10, end: lieAt + 10 }],
    ['a range to the end (containerd resuming)', { start: lieAt - 1000 }],
    ['a suffix range', { suffix: blob.length - lieAt + 50 }],
    ['a range that does not contain the wrong byte', { start: 0, end: 99 }],
  ] as const) {
    it(`never completes ${name} from a peer that lies inside it, and avoids that peer afterwards`, async (t) => {
      const s = await setup(['liarMid'])
      t.after(s.close)
      const res = await s.mirror.fetch({ path: blobPath, method: 'GET', range, signal: new AbortController().signal })
      assert.equal(res.status, 206)
      const length = Number(res.headers['content-length'])
      let received = 0
      await assert.rejects(async () => {
        for await (const c of res.body as AsyncIterable<Buffer>) received += c.length
      }, /does not match/)
      assert.ok(received < length, `received ${received} of ${length}`)
      await assert.rejects(s.mirror.fetch({ path: blobPath, method: 'GET', range, signal: new AbortController().signal }), /could not find peer/)
    })
  }

  it('answers 416 with the size for a range the blob cannot satisfy, as it does for local content', async (t) => {
    const s = await setup(['good'])
    t.after(s.close)
    for (const method of ['GET', 'HEAD'] as const) {
      await assert.rejects(s.mirror.fetch({ path: blobPath, method, range: { start: blob.length + 5 }, signal: new AbortController().signal }),
        (err: Error & { status?: number, headers?: Record<string, string> }) => err.status === 416 && err.headers?.['content-range'] === `bytes */${blob.length}`)
    }
  })

  it('answers HEAD with a range from the size the peer reports', async (t) => {
    const s = await setup(['good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'HEAD', range: { suffix: 100 }, signal: new AbortController().signal })
    assert.equal(res.status, 206)
    assert.equal(res.headers['content-range'], `bytes ${blob.length - 100}-${blob.length - 1}/${blob.length}`)
    assert.equal(res.headers['content-length'], '100')
  })

  it('does not wait for the stall timeout on a kept-alive connection to a peer that went silent', async (t) => {
    const s = await setup(['muteAfterFirst'], { stallTimeoutMs: 5000 })
    t.after(s.close)
    const first = await s.mirror.fetch({ path: blobPath, method: 'HEAD', signal: new AbortController().signal })
    assert.equal(first.status, 200)
    // Let the socket go back to the keep-alive pool.
    await new Promise((resolve) => setTimeout(resolve, 50))
    const started = performance.now()
    await assert.rejects(s.mirror.fetch({ path: blobPath, method: 'HEAD', signal: new AbortController().signal }), /all request retries exhausted/)
    const elapsed = performance.now() - started
    assert.ok(elapsed < 2500, `gave up after ${Math.round(elapsed)} ms, not the 5 s stall timeout`)
  })

  it('asks the next holder at once when a peer is busy (429)', async (t) => {
    const s = await setup(['busy', 'good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.match(res.peer ?? '', /good/)
    assert.deepEqual(await readAll(res.body), blob)
  })

  it('answers 404 BLOB_UNKNOWN when no peer has it', async (t) => {
    const s = await setup([])
    t.after(s.close)
    await assert.rejects(s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal }),
      (err: Error & { status?: number, code?: string }) => err.status === 404 && err.code === 'BLOB_UNKNOWN' && /could not find peer/.test(err.message))
  })

  it('skips peers that answer errors', async (t) => {
    const s = await setup(['error500', 'good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.deepEqual(await readAll(res.body), blob)
  })

  it('skips a dead peer fast', async (t) => {
    const s = await setup(['good'])
    t.after(s.close)
    // A second provider whose registry is not listening at all.
    const dead = new MemoryRouter((s.mirror as unknown as { init: { router: MemoryRouter } }).init.router['network' as never] as MemoryNetwork, { id: 'a-dead', addresses: ['127.0.99.1'] })
    await dead.advertise([digest])
    const started = performance.now()
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.deepEqual(await readAll(res.body), blob)
    assert.ok(performance.now() - started < 2000)
  })

  it('hedges to a second peer when the first is slow', async (t) => {
    const s = await setup(['slow', 'good'])
    t.after(s.close)
    const started = performance.now()
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.deepEqual(await readAll(res.body), blob)
    assert.ok(performance.now() - started < 1400, 'answered before the slow peer sent headers')
    assert.match(res.peer ?? '', /good/)
  })

  it('resumes from the byte reached when a peer breaks mid-stream', async (t) => {
    const s = await setup(['flaky', 'good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.match(res.peer ?? '', /flaky/)
    assert.deepEqual(await readAll(res.body), blob)
  })

  it('looks again, thoroughly, when every peer of the first answer failed, and resumes with a holder it missed', async (t) => {
    // The first (shortcut) answer knows only the flaky peer, as when another holder's record has not reached this node.
    const lookups: boolean[] = []
    const partial = (router: Router): Router => ({
      peerId: router.peerId,
      ready: () => router.ready(),
      advertise: async (keys, o) => { await router.advertise(keys, o) },
      withdraw: async (keys, o) => { await router.withdraw(keys, o) },
      close: async () => { await router.close() },
      async * lookup (key: string, options: LookupOptions): AsyncIterable<Peer> {
        lookups.push(options.thorough === true)
        for await (const peer of router.lookup(key, options)) {
          if (options.thorough === true || /flaky/.test(peer.id)) yield peer
        }
      },
    })
    const s = await setup(['flaky', 'good'], { wrapRouter: partial })
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.match(res.peer ?? '', /flaky/)
    assert.deepEqual(await readAll(res.body), blob)
    assert.deepEqual(lookups, [false, true], 'one shortcut lookup, then one thorough lookup')
  })

  it('does not look again when the first lookup found nobody', async (t) => {
    const lookups: boolean[] = []
    const counting = (router: Router): Router => Object.assign(Object.create(router) as Router, {
      lookup: (key: string, options: LookupOptions) => { lookups.push(options.thorough === true); return router.lookup(key, options) },
    })
    const s = await setup([], { wrapRouter: counting })
    t.after(s.close)
    await assert.rejects(s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal }), /could not find peer/)
    assert.deepEqual(lookups, [false])
  })

  it('resumes a range request at the right absolute offset', async (t) => {
    const s = await setup(['flaky', 'good'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', range: { suffix: 1_000_000 }, signal: new AbortController().signal })
    assert.equal(res.status, 206)
    assert.deepEqual(await readAll(res.body), blob.subarray(blob.length - 1_000_000))
  })

  it('abandons a stalled peer and resumes elsewhere', async (t) => {
    const s = await setup(['stall', 'good'], { stallTimeoutMs: 200 })
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    assert.match(res.peer ?? '', /stall/)
    assert.deepEqual(await readAll(res.body), blob)
  })

  it('never delivers the last byte of a blob that does not match its digest, and drops the liar', async (t) => {
    const s = await setup(['liar'])
    t.after(s.close)
    const res = await s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal })
    let received = 0
    await assert.rejects(async () => {
      for await (const c of res.body as AsyncIterable<Buffer>) received += c.length
    }, /does not match/)
    assert.ok(received < blob.length, `received ${received} of ${blob.length}`)
    await assert.rejects(s.mirror.fetch({ path: blobPath, method: 'GET', signal: new AbortController().signal }), /could not find peer/)
  })
})

describe('registry with a peer mirror', () => {
  let peer: FastifyInstance
  let node: FastifyInstance
  let mirror: PeerMirror
  let port = 0
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: {}, layers: [] })
  const store = new MemoryStore()
  const manifestDigest = store.addBlob(manifest)
  store.addBlob(blob, MediaType.ociLayerGzip)
  store.addImage('docker.io/library/app:1.0', manifestDigest)

  before(async () => {
    const network = new MemoryNetwork()
    const peerRouter = new MemoryRouter(network, { id: 'peer', addresses: ['127.0.200.2'] })
    await peerRouter.advertise([digest, manifestDigest, 'docker.io/library/app:1.0'])
    peer = createRegistryApp({ store, logger })
    await peer.listen({ host: '127.0.200.2', port: 0 })
    port = (peer.server.address() as AddressInfo).port
    mirror = new PeerMirror({ router: new MemoryRouter(network, { id: 'node', addresses: ['127.0.200.1'] }), registryPort: port, logger, resolveTimeoutMs: 50 })
    node = createRegistryApp({ store: new MemoryStore(), logger, mirror })
    await node.listen({ host: '127.0.200.1', port })
  })
  after(async () => {
    mirror.close()
    await node.close()
    await peer.close()
  })

  it('serves a tag from a peer, with the manifest media type', async () => {
    const res = await fetch(`http://127.0.200.1:${port}/v2/library/app/manifests/1.0?ns=docker.io`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), MediaType.ociManifest)
    assert.equal(res.headers.get('docker-content-digest'), manifestDigest)
    assert.equal(await res.text(), manifest)
  })

  it('serves a blob from a peer over real sockets', async () => {
    const res = await fetch(`http://127.0.200.1:${port}/v2/library/app/blobs/${digest}?ns=docker.io`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('oci-namespace'), 'docker.io')
    assert.equal(res.headers.get('docker-content-digest'), digest)
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob)
  })

  it('does not ask peers for a request that came from a peer (no loops)', async () => {
    const res = await fetch(`http://127.0.200.1:${port}/v2/library/app/blobs/${digest}`, { headers: { 'X-Spegel-Mirrored': 'true' } })
    assert.equal(res.status, 404)
    assert.equal((await res.json() as { errors: Array<{ code: string }> }).errors[0]?.code, 'BLOB_UNKNOWN')
  })

  it('answers 404 with an OCI error when no peer has it', async () => {
    const res = await fetch(`http://127.0.200.1:${port}/v2/library/app/blobs/sha256:${'1'.repeat(64)}`)
    assert.equal(res.status, 404)
    const body = await res.json() as { errors: Array<{ code: string, detail: { attempts: number } }> }
    assert.equal(body.errors[0]?.code, 'BLOB_UNKNOWN')
    assert.equal(body.errors[0]?.detail.attempts, 0)
  })
})
