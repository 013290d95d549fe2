// Herd protection with three nodes on loopback (memory routers, memory stores, real sockets): each node's "containerd"
// is the test, which starts a download in that node's store when its mirror answers 404, as containerd then pulls
// from the upstream.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import type { FastifyInstance } from 'fastify'
import type { ContainerdApi, ContainerdEvent, ContentInfo, ImageInfo, PluginInfo } from '../../../src/containerd/client.ts'
import { ContainerdStore } from '../../../src/containerd/store.ts'
import { Metrics } from '../../../src/metrics/index.ts'
import { HerdMirror, inflightKey } from '../../../src/registry/herd.ts'
import { createRegistryApp } from '../../../src/registry/index.ts'
import { PeerMirror, type PeerMirrorOptions } from '../../../src/registry/mirror.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { MemoryStore, NotFoundError, type ContentStore } from '../../../src/store/index.ts'
import { makeTempDir } from '../../helpers/tmp.ts'
import { waitFor } from '../../helpers/wait.ts'

const logger = pino({ level: 'silent' })
const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

interface Node {
  name: string
  ip: string
  store: MemoryStore
  router: MemoryRouter
  metrics: Metrics
  mirror: PeerMirror
  herd: HerdMirror
  app: FastifyInstance
}

interface ClusterOptions {
  inflightStartWaitMs?: number
  /** PeerMirror options of every node beyond the 50 ms resolve timeout (the mirror's defaults otherwise). */
  mirror?: Pick<PeerMirrorOptions, 'stallTimeoutMs' | 'maxResumes'>
  /** A store that replaces a node's MemoryStore in its registry, by node name (e.g. a ContainerdStore). */
  stores?: Record<string, ContentStore>
  /** false: every node serves any download in progress (for tests that fake a claim without the herd). Default true. */
  gate?: boolean
  /** What every node shares of its local content (default: nothing). */
  shared?: Set<string>
  /**
   * The first lookup of a blob's digest on these nodes takes this long (ms): a loaded node whose query outlives the
   * resolve timeout. Later lookups of it answer at once, as the lookup cache does once that query has finished.
   */
  slowFirstLookupMs?: Record<string, number>
}

/** The router as the node's PeerMirror sees it when its first lookup of each digest is slow (see slowFirstLookupMs). */
function slowFirstLookups (router: MemoryRouter, delayMs: number): MemoryRouter {
  const looked = new Set<string>()
  return new Proxy(router, {
    get (target, prop, receiver) {
      if (prop !== 'lookup') return Reflect.get(target, prop, receiver) as unknown
      return async function * (key: string, options: Parameters<MemoryRouter['lookup']>[1]) {
        if (key.startsWith('sha256:') && !looked.has(key)) {
          looked.add(key)
          await sleep(delayMs)
        }
        yield * target.lookup(key, options)
      }
    },
  })
}

let subnet = 210
async function cluster (names: string[], options: ClusterOptions = {}): Promise<{ nodes: Node[], port: number, close: () => Promise<void> }> {
  const network = new MemoryNetwork()
  const net = subnet++
  const nodes: Node[] = []
  let port = 0
  for (const [i, name] of names.entries()) {
    const ip = `127.0.${net}.${i + 1}`
    const store = new MemoryStore()
    const router = new MemoryRouter(network, { id: name, addresses: [ip] })
    const metrics = new Metrics({ defaultMetrics: false })
    const delay = options.slowFirstLookupMs?.[name]
    const mirror = new PeerMirror({ router: delay === undefined ? router : slowFirstLookups(router, delay), registryPort: port, logger, resolveTimeoutMs: 50, metrics, ...options.mirror })
    const herd = new HerdMirror({ mirror, router, logger, metrics })
    // As the daemon wires it: nothing local is shared here, so a download is streamed only while the herd has this
    // node's containerd download it (HerdMirror.downloading).
    const app = createRegistryApp({
      store: options.stores?.[name] ?? store,
      logger,
      mirror: herd,
      metrics,
      inflightStartWaitMs: options.inflightStartWaitMs ?? 2000,
      ...(options.gate !== false ? { shared: options.shared ?? new Set<string>(), downloading: (digest: string) => herd.downloading(digest) } : {}),
    })
    await app.listen({ host: ip, port })
    if (port === 0) {
      port = (app.server.address() as AddressInfo).port
      // The first mirror learned the port only now.
      ;(mirror as unknown as { init: { registryPort: number } }).init.registryPort = port
    }
    nodes.push({ name, ip, store, router, metrics, mirror, herd, app })
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

/** What a client (containerd) got of a blob GET: the head, the bytes that arrived, and whether the body was complete. */
interface Received {
  /** 0 when the connection closed before a response head. */
  status: number
  contentLength: number
  body: Buffer
  complete: boolean
  /** From the request to the end of the response (complete or cut short). */
  ms: number
}

/**
 * A GET over node:http, as containerd makes one. `head` resolves when the response head arrives (false: the
 * connection closed first), `end` when the response ends, complete or cut short.
 */
function get (url: string, signal: AbortSignal): { head: Promise<boolean>, end: Promise<Received> } {
  const started = performance.now()
  let headed: (arrived: boolean) => void = () => {}
  const head = new Promise<boolean>((resolve) => { headed = resolve })
  const end = new Promise<Received>((resolve) => {
    const req = http.get(url, { agent: false, signal }, (res) => {
      headed(true)
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => { chunks.push(c) })
      // A body cut short errors (ECONNRESET, "aborted"); 'close' follows either way.
      res.on('error', () => {})
      res.once('close', () => {
        resolve({ status: res.statusCode ?? 0, contentLength: Number(res.headers['content-length']), body: Buffer.concat(chunks), complete: res.complete, ms: performance.now() - started })
      })
    })
    req.once('error', () => {
      headed(false)
      resolve({ status: 0, contentLength: NaN, body: Buffer.alloc(0), complete: false, ms: performance.now() - started })
    })
  })
  return { head, end }
}

/** containerd as a node whose content store holds nothing complete: its downloads are only in its ingest directory. */
class EmptyContainerd implements ContainerdApi {
  async getImage (name: string): Promise<ImageInfo> { throw new NotFoundError(`image ${name} not found`) }
  async listImages (): Promise<ImageInfo[]> { return [] }
  async contentInfo (digest: string): Promise<ContentInfo> { throw new NotFoundError(`content ${digest} not found`) }
  async * listContent (): AsyncGenerator<ContentInfo> {}
  readContent (): Readable { return new Readable({ read () { this.destroy(new NotFoundError('no content')) } }) }
  async pluginInfo (): Promise<PluginInfo | undefined> { return undefined }
  subscribe (): AsyncIterable<ContainerdEvent> { return (async function * () {})() }
  close (): void {}
}

/** Starts a download in a containerd content directory as containerd does (ref, total, growing data); returns its data file. */
async function startIngest (contentPath: string, digest: string, total: number): Promise<string> {
  const dir = join(contentPath, 'ingest', createHash('sha256').update(digest).digest('hex'))
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'ref'), `k8s.io/1/layer-${digest}`)
  await writeFile(join(dir, 'total'), String(total))
  await writeFile(join(dir, 'data'), '')
  return join(dir, 'data')
}

async function inflightServed (n: Node): Promise<number> {
  return (await n.metrics.inflightServed.get()).values[0]?.value ?? 0
}

/** A new 256 KiB blob that `a` misses first, so it claims it and downloads it (a's containerd gets 404). */
async function claimedBy (a: Node, port: number): Promise<{ blob: Buffer, url: (n: Node) => string }> {
  const blob = randomBytes(256 * 1024)
  const url = (n: Node): string => `http://${n.ip}:${port}/v2/library/app/blobs/${sha(blob)}?ns=docker.io`
  const first = await fetch(url(a))
  assert.equal(first.status, 404)
  await first.arrayBuffer()
  return { blob, url }
}

/** A follow of a's download that stalls after 200 000 bytes: b answers 200, hands some bytes, and cuts the body within seconds. */
async function brokenWithinSeconds (response: ReturnType<typeof get>, a: Node): Promise<void> {
  assert.equal(await response.head, true)
  const res = await response.end
  assert.equal(await inflightServed(a), 1, 'b streamed a\'s download')
  assert.equal(res.status, 200)
  assert.equal(res.complete, false)
  assert.ok(res.body.length > 0 && res.body.length < 200_000, `received ${res.body.length} bytes`)
  assert.ok(res.ms < 6000, `ended after ${Math.round(res.ms)} ms`)
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
    for (const n of c.nodes) assert.ok(n.herd.downloading(sha(blob)), `${n.name}'s download may be streamed to peers`)
    assert.equal((c.nodes[0] as Node).herd.downloading(sha(randomBytes(8))), false, 'a digest the herd never saw')
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

  it('a holder found only after the resolve timeout serves the blob: the herd asks again before sending containerd upstream', async (t) => {
    const shared = new Set<string>()
    const c = await cluster(['a', 'h'], { shared, slowFirstLookupMs: { a: 200 } })
    t.after(c.close)
    const [a, h] = c.nodes as [Node, Node]
    const blob = randomBytes(64 * 1024)
    const digest = h.store.addBlob(blob)
    shared.add(digest)
    await h.router.advertise([digest])
    const res = await fetch(`http://${a.ip}:${c.port}/v2/library/app/blobs/${digest}?ns=docker.io`)
    assert.equal(res.status, 200, 'served from the holder, not 404 (which sends containerd to the upstream)')
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(blob))
    assert.deepEqual(await outcomes(a), { held: 1 })
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

  // Small enough to sit in the socket buffers of every hop: what b's registry has sent, destroying the response cannot
  // take back, so the client must never be handed the last chunk before the digest check. 48 KiB are one chunk of b's
  // peer client (nothing reaches the client); 160 KiB are three (the first reaches it before the rest arrives).
  for (const size of [48 * 1024, 160 * 1024]) {
    it(`never hands a client the last byte of a wrong download of ${size} bytes, small enough to sit in socket buffers`, { timeout: 10_000 }, async (t) => {
      const c = await cluster(['a', 'b'])
      const client = new AbortController()
      t.after(async () => { client.abort(); await c.close() })
      const [a, b] = c.nodes as [Node, Node]
      const blob = randomBytes(size)
      const url = (n: Node): string => `http://${n.ip}:${c.port}/v2/library/app/blobs/${sha(blob)}?ns=docker.io`
      const first = await fetch(url(a))
      assert.equal(first.status, 404, 'a claims the blob and downloads it')
      await first.arrayBuffer()
      const wrong = Buffer.from(blob)
      wrong[1000] = (wrong[1000] ?? 0) ^ 1
      const dl = a.store.startDownload(sha(blob), blob.length)
      t.after(dl.abort)
      const flowing = size > 2 * 64 * 1024
      const cut = flowing ? 140_000 : 4096
      dl.append(wrong.subarray(0, cut))
      const response = get(url(b), client.signal)
      // b streams a's download before the rest arrives (else a would hold it complete, under another digest).
      await waitFor(async () => await inflightServed(a) === 1, { what: 'a to serve its download to b', timeoutMs: 5000 })
      if (flowing) assert.equal(await response.head, true, 'b answered before the rest arrived')
      dl.append(wrong.subarray(cut))
      const res = await response.end
      assert.equal((await a.metrics.inflightServedBytes.get()).values[0]?.value, blob.length, 'a sent b every byte')
      assert.equal((await b.metrics.verificationFailures.get()).values[0]?.value, 1, 'b found them wrong')
      assert.equal(res.complete, false, 'the response is broken')
      assert.ok(res.body.length < blob.length, `received ${res.body.length} of ${blob.length} bytes`)
      if (flowing) {
        assert.equal(res.status, 200)
        assert.equal(res.contentLength, blob.length)
        assert.ok(res.body.length > 0, 'the first chunk reached the client')
      }
    })
  }

  // The same guard where it is kept: b's mirror reading a's wrong download. Through b's registry a chunk handed out too
  // early still does not arrive (PeerBody.writeTo destroys the response in the tick it wrote the chunk, before node:http
  // sends a corked write), so only this test sees PeerMirror.stream withhold the last chunk.
  it('an in-flight stream of a wrong download never hands its reader the last byte', { timeout: 10_000 }, async (t) => {
    // a's claim is made here, not by its herd.
    const c = await cluster(['a', 'b'], { gate: false })
    const reader = new AbortController()
    t.after(async () => { reader.abort(); await c.close() })
    const [a, b] = c.nodes as [Node, Node]
    const blob = randomBytes(48 * 1024)
    const wrong = Buffer.from(blob)
    wrong[1000] = (wrong[1000] ?? 0) ^ 1
    const dl = a.store.startDownload(sha(blob), blob.length)
    t.after(dl.abort)
    await a.router.advertise([inflightKey(sha(blob))])
    dl.append(wrong.subarray(0, 4096))
    const path = { kind: 'blobs' as const, repository: 'library/app', registry: 'docker.io', digest: sha(blob) }
    const res = await b.mirror.fetch({ path, method: 'GET', signal: reader.signal }, { lookupKey: inflightKey(sha(blob)), inflight: true })
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], String(blob.length))
    dl.append(wrong.subarray(4096))
    let received = 0
    await assert.rejects(async () => {
      for await (const chunk of res.body as AsyncIterable<Buffer>) received += chunk.length
    }, /does not match/)
    assert.ok(received < blob.length, `received ${received} of ${blob.length} bytes`)
  })

  // Each side ends a stalled stream on its own, with the other side's timeout far longer: b's mirror (its stall
  // timeout's default, 3 s) when a sends nothing, a's registry (its ingest follower's default, 3 s, through
  // ContainerdStore) when a's download stops growing. One attempt each (maxResumes: 0): a resume would ask the same
  // stalled node again and wait as long once more.
  it('a follower whose peer sends nothing mid-body gives up within seconds, by its own stall timeout', { timeout: 10_000 }, async (t) => {
    // a's MemoryStore download waits for more bytes for ever: only b's stall timeout can end this.
    const c = await cluster(['a', 'b'], { mirror: { maxResumes: 0 } })
    const client = new AbortController()
    t.after(async () => { client.abort(); await c.close() })
    const [a, b] = c.nodes as [Node, Node]
    const { blob, url } = await claimedBy(a, c.port)
    const dl = a.store.startDownload(sha(blob), blob.length)
    t.after(dl.abort)
    // Three of b's chunks and a part: b hands the client the first two, and waits for the rest of the third.
    dl.append(blob.subarray(0, 200_000))
    await brokenWithinSeconds(get(url(b), client.signal), a)
  })

  it('a follower of a download that stops growing gets a broken body within seconds, by the serving node\'s stall timeout', { timeout: 10_000 }, async (t) => {
    const dir = await makeTempDir('spegel-herd-stall')
    const containerd = new ContainerdStore({ client: new EmptyContainerd(), contentPath: dir.path })
    // b's mirror would wait a minute for a silent peer: only a's ingest follower can end this.
    const c = await cluster(['a', 'b'], { mirror: { stallTimeoutMs: 60_000, maxResumes: 0 }, stores: { a: containerd } })
    const client = new AbortController()
    t.after(async () => { client.abort(); await c.close(); await dir.cleanup() })
    const [a, b] = c.nodes as [Node, Node]
    const { blob, url } = await claimedBy(a, c.port)
    // a's containerd starts downloading, writes 200 000 bytes and stops.
    await writeFile(await startIngest(dir.path, sha(blob), blob.length), blob.subarray(0, 200_000))
    await brokenWithinSeconds(get(url(b), client.signal), a)
  })
})
