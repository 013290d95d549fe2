// ContainerdStore and ContainerdClient against a real containerd (the Debian package, 1.6 here) holding images built
// locally and imported with `ctr images import`, so no network is needed.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { ContainerdClient } from '../../../src/containerd/client.ts'
import type { ContainerdEvent } from '../../../src/containerd/client.ts'
import { ContainerdStore } from '../../../src/containerd/store.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { NotFoundError, StoreUnavailableError } from '../../../src/store/errors.ts'
import type { Descriptor } from '../../../src/store/types.ts'
import { walkImage } from '../../../src/store/walk.ts'
import { makeImage, makeIndexImage, startContainerd, writeOciArchive } from '../../helpers/containerd.ts'
import type { ContainerdInstance, TestImage } from '../../helpers/containerd.ts'
import { runStoreConformance } from '../../store/conformance.ts'
import type { ConformanceFixture } from '../../store/conformance.ts'
import { waitFor } from '../../helpers/wait.ts'

let ctrd: ContainerdInstance
let client: ContainerdClient
// A manifest with a layer bigger than the fingerprint limit and than one read chunk.
const multi = makeImage('example.com/spegel-test/multi:v1', { layerSizes: [1000, 5 * 1024 * 1024 + 7, 10] })
const index = makeIndexImage('example.com/spegel-test/index:v1', ['amd64', 'arm64'], { layerSizes: [2000] })
const docker = makeIndexImage('localhost:5000/spegel-test/docker:v1', ['amd64'], { layerSizes: [300], docker: true })
// Loses a layer and a whole child manifest in the walk test.
const victim = makeIndexImage('example.com/spegel-test/victim:v1', ['amd64', 'arm64'], { layerSizes: [100, 200] })
const images = [multi, index, docker, victim]

before(async () => {
  ctrd = await startContainerd()
  const archive = join(ctrd.dir, 'images.tar')
  await writeOciArchive(archive, images)
  await ctrd.ctr(['images', 'import', '--all-platforms', '--no-unpack', archive])
  client = new ContainerdClient({ socket: ctrd.socket, namespace: ctrd.namespace, maxReconnectBackoffMs: 500 })
})

after(async () => {
  client?.close()
  await ctrd?.stop()
})

function descriptor (image: TestImage, i: number, mediaType?: string): Descriptor {
  const b = image.blobs[i]
  assert.ok(b !== undefined)
  return { mediaType: mediaType ?? b.mediaType, digest: b.digest, size: b.size }
}

function fixture (store: ContainerdStore): ConformanceFixture {
  return {
    store,
    name: 'containerd',
    existingRef: index.name,
    existingRefDigest: index.top.digest,
    notFoundRef: 'example.com/spegel-test/index:missing',
    notFoundDigest: 'sha256:' + 'f'.repeat(64),
    existingDescriptor: descriptor(index, 0),
    moreDescriptors: [
      descriptor(multi, 0),
      // Config: fingerprinted. Layers nobody described: octet-stream (one above 4 MiB is never read to guess).
      descriptor(multi, 1),
      descriptor(multi, 2, MediaType.octetStream),
      descriptor(multi, 3, MediaType.octetStream),
    ],
    addContent: async (bytes) => await ingest(bytes),
    deleteContent: async (digest) => { await ctrd.ctr(['content', 'rm', digest]) },
    reportsCreation: false,
  }
}

/** Writes bytes into containerd's content store with `ctr content ingest`, as a pull would commit them. */
async function ingest (bytes: Buffer): Promise<string> {
  const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex')
  const args = ['--address', ctrd.socket, '-n', ctrd.namespace, 'content', 'ingest', '--expected-digest', digest,
    '--expected-size', String(bytes.byteLength), `conformance-${process.pid}-${digest.slice(7, 19)}`]
  const child = spawn('ctr', args, { stdio: ['pipe', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.stdin.end(bytes)
  const [code] = await once(child, 'close') as [number | null]
  if (code !== 0) throw new Error(`ctr content ingest exited with ${code}: ${stderr.trim()}`)
  return digest
}

test('conformance: blobs read directly from the content directory', async (t) => {
  const store = new ContainerdStore({ client, contentPath: ctrd.contentPath })
  await runStoreConformance(t, fixture(store))
})

test('conformance: content directory detected through introspection', async (t) => {
  const store = new ContainerdStore({ client })
  await runStoreConformance(t, fixture(store))
  const plugin = await client.pluginInfo('io.containerd.content.v1', 'content')
  assert.equal(plugin?.exports.root, ctrd.contentPath)
})

test('conformance: blobs read over gRPC when the content directory is unreadable', async (t) => {
  const warnings: string[] = []
  const logger = { warn: (_: object, msg: string) => { warnings.push(msg) }, debug: () => {} }
  const store = new ContainerdStore({ client, contentPath: join(ctrd.dir, 'not-the-content-dir'), logger })
  await runStoreConformance(t, fixture(store))
  assert.equal(warnings.length, 1)
})

test('conformance: a store that makes its own client from the socket', async (t) => {
  const store = new ContainerdStore({ socket: ctrd.socket, namespace: ctrd.namespace })
  t.after(async () => { await store.close() })
  await runStoreConformance(t, fixture(store))
})

test('misses are answered from a verified content directory; an unverified or wrong one always asks containerd', async () => {
  let infoCalls = 0
  const counting = new Proxy(client, {
    get (target, prop, receiver) {
      if (prop === 'contentInfo') return async (...args: Parameters<ContainerdClient['contentInfo']>) => { infoCalls++; return await target.contentInfo(...args) }
      const v = Reflect.get(target, prop, receiver) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  })
  const missing = 'sha256:' + 'e'.repeat(64)
  const present = descriptor(multi, 1)
  const store = new ContainerdStore({ client: counting, contentPath: ctrd.contentPath })
  // Before any hit has shown the directory is containerd's, a miss asks containerd.
  await assert.rejects(store.descriptor(missing), NotFoundError)
  assert.equal(infoCalls, 1)
  assert.equal((await store.descriptor(present.digest)).size, present.size)
  assert.equal(infoCalls, 2)
  await assert.rejects(store.descriptor(missing), NotFoundError)
  assert.equal(infoCalls, 2, 'a verified directory answers a miss without gRPC')
  assert.equal((await store.descriptor(present.digest)).size, present.size)
  assert.equal(infoCalls, 3, 'a present file is still confirmed by containerd')

  // A new store checks the directory in the background on its first lookup, against content containerd lists.
  infoCalls = 0
  const probing = new ContainerdStore({ client: counting, contentPath: ctrd.contentPath })
  await assert.rejects(probing.descriptor(missing), NotFoundError)
  assert.equal(infoCalls, 1)
  // Only misses are asked for, so no hit can verify the directory: once a miss costs no gRPC call, the probe did.
  await waitFor(async () => {
    const before = infoCalls
    await assert.rejects(probing.descriptor(missing), NotFoundError)
    return infoCalls === before
  }, { timeoutMs: 5_000, what: 'the background probe to verify the content directory' })

  // Opt-in: content confirmed moments ago is not asked for again while its file is there and the store's changes
  // (which carry containerd's deletions) are followed; once nobody follows them, it is asked for again.
  infoCalls = 0
  const remembering = new ContainerdStore({ client: counting, contentPath: ctrd.contentPath, confirmedTtlMs: 60_000 })
  const following = new AbortController()
  const followed = (async () => { for await (const _ of remembering.changes(following.signal)); })()
  for (let i = 0; i < 3; i++) assert.equal((await remembering.descriptor(present.digest)).size, present.size)
  assert.equal(infoCalls, 1)
  following.abort()
  await followed
  assert.equal((await remembering.descriptor(present.digest)).size, present.size)
  assert.equal(infoCalls, 2)

  // A directory that is not containerd's (a wrong --containerd-content-path) never turns content into misses.
  infoCalls = 0
  const wrong = new ContainerdStore({ client: counting, contentPath: join(ctrd.dir, 'not-the-content-dir'), logger: { warn: () => {}, debug: () => {} } })
  for (let i = 0; i < 2; i++) assert.equal((await wrong.descriptor(present.digest)).size, present.size)
  const before = infoCalls
  await assert.rejects(wrong.descriptor(missing), NotFoundError)
  assert.equal(infoCalls, before + 1, 'an unverified directory never answers a miss by itself')
})

test('listImages lists every named image and skips bare image IDs', async () => {
  const store = new ContainerdStore({ client, contentPath: ctrd.contentPath })
  const records = await store.listImages()
  assert.deepEqual(records.map((r) => r.name).sort(), images.map((i) => i.name).sort())
  const d = records.find((r) => r.name === docker.name)
  assert.deepEqual(d, {
    name: docker.name,
    registry: 'localhost:5000',
    repository: 'spegel-test/docker',
    tag: 'v1',
    digest: docker.top.digest,
    mediaType: MediaType.dockerManifestList,
  })
  // The CRI plugin also names images by config digest; the client sees them, the store does not.
  assert.ok((await client.listImages()).some((i) => i.name.startsWith('sha256:')))
})

test('walkImage lists OCI and Docker images, index to layers, with declared media types', async () => {
  const store = new ContainerdStore({ client, contentPath: ctrd.contentPath })
  for (const image of [multi, index, docker]) {
    const walked = await walkImage(store, image.top.digest)
    assert.deepEqual(walked, image.blobs.map((b) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size })), image.name)
  }
  // What the walk learned is what descriptor now reports, without fingerprinting the big layer.
  assert.deepEqual(await store.descriptor(multi.blobs[3]!.digest), descriptor(multi, 3))
  assert.deepEqual(await store.walk('sha256:' + 'e'.repeat(64)), [])
})

test('walkImage skips deleted content and what only it references', async () => {
  const store = new ContainerdStore({ client, contentPath: ctrd.contentPath })
  const all = victim.blobs.map((b) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size }))
  assert.deepEqual(await store.walk(victim.top.digest), all)
  // blobs: [index, m-amd64, config, layer, layer, m-arm64, config, layer, layer]
  const layer = victim.blobs[3]!.digest
  const arm = victim.blobs[5]!.digest
  await ctrd.ctr(['content', 'rm', layer, arm])
  await assert.rejects(store.descriptor(layer), NotFoundError)
  const walked = await store.walk(victim.top.digest)
  assert.deepEqual(walked, all.slice(0, 5).filter((d) => d.digest !== layer))
})

test('events: subscribe delivers /images/create and /images/delete', async (t) => {
  const ac = new AbortController()
  t.after(() => { ac.abort() })
  const seen: ContainerdEvent[] = []
  const events = client.subscribe(['topic~="/images/"'], { signal: ac.signal })
  const consumed = (async () => { for await (const e of events) seen.push(e) })().catch((err: unknown) => err)
  const event = async (match: (e: ContainerdEvent) => boolean, timeoutMs: number, what: string): Promise<ContainerdEvent> =>
    await waitFor(() => seen.find(match), { timeoutMs, intervalMs: 20, what })
  // The subscription has no acknowledgement: create tags until one is seen, which proves it is live.
  let name = ''
  for (let i = 0; i < 20; i++) {
    name = `example.com/spegel-test/tagged:t${i}`
    await ctrd.ctr(['images', 'tag', multi.name, name])
    const found = await event((e) => e.topic === '/images/create' && e.payload.type === 'image-create' && e.payload.name === name, 1_000, `the create event of ${name}`).catch(() => undefined)
    if (found !== undefined) break
    name = ''
  }
  assert.notEqual(name, '', 'an /images/create event arrived')
  const created = seen.find((e) => e.topic === '/images/create' && e.payload.type === 'image-create' && e.payload.name === name)
  assert.equal(created?.namespace, ctrd.namespace)
  assert.equal(created?.payloadType, 'containerd.services.images.v1.ImageCreate')
  assert.ok(created?.timestamp instanceof Date)
  await ctrd.ctr(['images', 'rm', name])
  const deleted = await event((e) => e.topic === '/images/delete' && e.payload.type === 'image-delete' && e.payload.name === name, 10_000, `the delete event of ${name}`)
  assert.deepEqual(deleted.payload, { type: 'image-delete', name })
  ac.abort()
  assert.equal((await consumed as Error).name, 'AbortError')
})

test('a containerd restart: calls fail with StoreUnavailableError, then work again on the same client', async () => {
  const store = new ContainerdStore({ client, contentPath: '' })
  assert.equal(await store.resolve(multi.name), multi.top.digest)
  const subscription = (async () => { for await (const _ of client.subscribe()) { /* wait for the break */ } })().catch((err: unknown) => err)
  await ctrd.down()
  try {
    const started = Date.now()
    await assert.rejects(store.resolve(multi.name), StoreUnavailableError)
    await assert.rejects(store.descriptor(multi.top.digest), StoreUnavailableError)
    await assert.rejects(store.listImages(), StoreUnavailableError)
    assert.ok(Date.now() - started < 5_000, 'calls failed fast')
    assert.ok(await subscription instanceof StoreUnavailableError, 'the subscription ended with StoreUnavailableError')
  } finally {
    await ctrd.up()
  }
  // Until the client has reconnected calls fail with StoreUnavailableError; any other error is reported on timeout.
  const resolved = await waitFor(async () => await store.resolve(multi.name).catch((err: unknown) => {
    if (err instanceof StoreUnavailableError) return undefined
    throw err
  }), { timeoutMs: 15_000, intervalMs: 100, what: 'the store to work again after the restart' })
  assert.equal(resolved, multi.top.digest)
  assert.deepEqual(await store.descriptor(multi.top.digest), descriptor(multi, 0))
  // The content directory was not known while containerd was down; it is asked for again and used now.
  const stream = await store.open(multi.blobs[3]!.digest, { start: 5, end: 9 })
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  assert.ok(Buffer.concat(chunks).equals(multi.blobs[3]!.bytes.subarray(5, 10)))
})
