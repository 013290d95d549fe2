// ContainerdStore over a fake containerd API and a real content directory on disk.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { status } from '@grpc/grpc-js'
import type { CallOptions, ContainerdApi, ContainerdEvent, ContentInfo, EventPayload, ImageInfo, PluginInfo, ReadContentOptions } from '../../../src/containerd/client.ts'
import { LruMap } from '../../../src/containerd/lru.ts'
import { ContainerdStore } from '../../../src/containerd/store.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { NotFoundError, StoreUnavailableError } from '../../../src/store/errors.ts'
import type { Descriptor } from '../../../src/store/types.ts'
import { runStoreConformance } from '../../store/conformance.ts'

class FakeContainerd implements ContainerdApi {
  readonly images = new Map<string, Descriptor>()
  readonly blobs = new Map<string, Buffer>()
  readonly calls: string[] = []
  root: string
  closed = false
  /** One per open event subscription. */
  private readonly subscribers = new Set<(event: ContainerdEvent) => void>()

  constructor (root: string) {
    this.root = root
  }

  async getImage (name: string, options?: CallOptions): Promise<ImageInfo> {
    this.calls.push('getImage')
    options?.signal?.throwIfAborted()
    if (name === '') throw new StoreUnavailableError('invalid', { cause: Object.assign(new Error('x'), { code: status.INVALID_ARGUMENT }) })
    const target = this.images.get(name)
    if (target === undefined) throw new NotFoundError(`image ${name} not found`)
    return { name, labels: {}, target }
  }

  async listImages (filters: string[] = [], options?: CallOptions): Promise<ImageInfo[]> {
    this.calls.push('listImages')
    options?.signal?.throwIfAborted()
    assert.deepEqual(filters, ['name~="^.+/"'])
    return [...this.images].map(([name, target]) => ({ name, labels: {}, target }))
  }

  async contentInfo (digest: string, options?: CallOptions): Promise<ContentInfo> {
    this.calls.push('contentInfo')
    options?.signal?.throwIfAborted()
    const b = this.blobs.get(digest)
    if (b === undefined) throw new NotFoundError(`content ${digest} not found`)
    return { digest, size: b.byteLength, labels: {} }
  }

  async * listContent (_filters: string[] = [], options?: CallOptions): AsyncGenerator<ContentInfo> {
    // The store's background probe of the content directory: not recorded in `calls`, whose order tests check.
    for (const [digest, b] of this.blobs) {
      options?.signal?.throwIfAborted()
      yield { digest, size: b.byteLength, labels: {} }
    }
  }

  readContent (digest: string, options: ReadContentOptions = {}): Readable {
    this.calls.push('readContent')
    const b = this.blobs.get(digest)
    if (b === undefined) return new Readable({ read () { this.destroy(new NotFoundError('gone')) } })
    const offset = options.offset ?? 0
    const end = options.size !== undefined && options.size > 0 ? offset + options.size : b.byteLength
    const chunks: Buffer[] = []
    for (let i = offset; i < end; i += 1000) chunks.push(b.subarray(i, Math.min(end, i + 1000)))
    return Readable.from(chunks, { objectMode: false })
  }

  async pluginInfo (type: string, id: string): Promise<PluginInfo | undefined> {
    this.calls.push('pluginInfo')
    assert.equal(type, 'io.containerd.content.v1')
    assert.equal(id, 'content')
    return { type, id, requires: [], exports: { root: this.root }, capabilities: [] }
  }

  /** Like the real client: the subscription starts at the call; aborting ends it with the signal's reason. */
  subscribe (filters: string[] = [], options?: CallOptions): AsyncIterable<ContainerdEvent> {
    options?.signal?.throwIfAborted()
    assert.deepEqual(filters, ['topic~="^/images/"', 'topic~="^/content/"'])
    const signal = options?.signal
    const queue: ContainerdEvent[] = []
    let wake: (() => void) | undefined
    const push = (event: ContainerdEvent): void => {
      queue.push(event)
      wake?.()
    }
    const subscribers = this.subscribers
    subscribers.add(push)
    return (async function * () {
      const onAbort = (): void => { wake?.() }
      signal?.addEventListener('abort', onAbort, { once: true })
      try {
        for (;;) {
          signal?.throwIfAborted()
          const event = queue.shift()
          if (event !== undefined) {
            yield event
            continue
          }
          await new Promise<void>((resolve) => { wake = resolve })
        }
      } finally {
        subscribers.delete(push)
        signal?.removeEventListener('abort', onAbort)
      }
    })()
  }

  /** Sends an event to every subscription. */
  emit (payload: EventPayload): void {
    const topic = payload.type === 'unknown' ? '/unknown' : `/${payload.type.replace('-', 's/')}`
    for (const push of this.subscribers) push({ namespace: 'k8s.io', topic, payloadType: '', payload })
  }

  close (): void {
    this.closed = true
  }

  count (call: string): number {
    return this.calls.filter((c) => c === call).length
  }
}

interface World {
  fake: FakeContainerd
  root: string
  manifest: Descriptor
  config: Descriptor
  small: Descriptor
  big: Descriptor
  add: (mediaType: string, bytes: Buffer | string, onDisk?: boolean) => Promise<Descriptor>
}

async function world (t: TestContext): Promise<World> {
  const root = await mkdtemp(join(tmpdir(), 'spegel-content-'))
  t.after(async () => { await rm(root, { recursive: true, force: true }) })
  await mkdir(join(root, 'blobs', 'sha256'), { recursive: true })
  const fake = new FakeContainerd(root)
  const add = async (mediaType: string, bytes: Buffer | string, onDisk = true): Promise<Descriptor> => {
    const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes
    const hex = createHash('sha256').update(data).digest('hex')
    fake.blobs.set(`sha256:${hex}`, data)
    if (onDisk) await writeFile(join(root, 'blobs', 'sha256', hex), data)
    return { mediaType, digest: `sha256:${hex}`, size: data.byteLength }
  }
  const config = await add(MediaType.ociConfig, JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }))
  const small = await add(MediaType.octetStream, randomBytes(3000))
  const big = await add(MediaType.octetStream, randomBytes(4 * 1024 * 1024 + 1))
  const manifest = await add(MediaType.ociManifest, JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config,
    layers: [{ ...small, mediaType: MediaType.ociLayerGzip }, { ...big, mediaType: MediaType.ociLayerGzip }],
  }))
  fake.images.set('example.com/org/app:v1', manifest)
  return { fake, root, manifest, config, small, big, add }
}

function fixture (w: World, store: ContainerdStore): Parameters<typeof runStoreConformance>[1] {
  return {
    store,
    name: 'containerd',
    existingRef: 'example.com/org/app:v1',
    existingRefDigest: w.manifest.digest,
    notFoundRef: 'example.com/org/app:missing',
    notFoundDigest: 'sha256:' + '0'.repeat(64),
    existingDescriptor: w.manifest,
    moreDescriptors: [w.config, w.small, w.big],
    addContent: async (bytes) => {
      const d = await w.add(MediaType.octetStream, bytes)
      w.fake.emit({ type: 'content-create', digest: d.digest, size: d.size })
      return d.digest
    },
    // The file stays, as when another namespace still holds the blob: only containerd's word makes it absent.
    deleteContent: async (digest) => {
      w.fake.blobs.delete(digest)
      w.fake.emit({ type: 'content-delete', digest })
    },
  }
}

test('conformance with direct reads from the content directory', async (t) => {
  const w = await world(t)
  // Remembering confirmed content: the conformance suite's deletion must still be seen.
  const store = new ContainerdStore({ client: w.fake, contentPath: w.root, confirmedTtlMs: 60_000 })
  await runStoreConformance(t, fixture(w, store))
  assert.equal(w.fake.count('readContent'), 0, 'no gRPC reads')
  assert.equal(w.fake.count('pluginInfo'), 0)
})

test('conformance with the content directory detected once through introspection', async (t) => {
  const w = await world(t)
  const store = new ContainerdStore({ client: w.fake })
  await runStoreConformance(t, fixture(w, store))
  assert.equal(w.fake.count('pluginInfo'), 1)
  assert.equal(w.fake.count('readContent'), 0, 'no gRPC reads')
})

test('conformance with gRPC reads when the content directory cannot be read', async (t) => {
  const w = await world(t)
  const warnings: string[] = []
  const logger = { warn: (_: object, msg: string) => { warnings.push(msg) }, debug: () => {} }
  const store = new ContainerdStore({ client: w.fake, contentPath: join(w.root, 'does-not-exist'), logger })
  await runStoreConformance(t, fixture(w, store))
  assert.ok(w.fake.count('readContent') > 0)
  assert.equal(warnings.length, 1, 'warned once')
})

test('gRPC reads are used when introspection reports no content directory', async (t) => {
  const w = await world(t)
  w.fake.root = ''
  const store = new ContainerdStore({ client: w.fake })
  const chunks: Buffer[] = []
  for await (const c of await store.open(w.small.digest, { start: 10, end: 1009 })) chunks.push(c as Buffer)
  assert.ok(Buffer.concat(chunks).equals(w.fake.blobs.get(w.small.digest)!.subarray(10, 1010)))
  await store.open(w.small.digest)
  assert.equal(w.fake.count('readContent'), 2)
  assert.equal(w.fake.count('pluginInfo'), 1)
})

test('confirmed content is remembered only while changes() is followed, and a reported deletion is not', async (t) => {
  const w = await world(t)
  const store = new ContainerdStore({ client: w.fake, contentPath: w.root, confirmedTtlMs: 60_000 })
  const infoCalls = async (digest: string): Promise<number> => {
    const before = w.fake.count('contentInfo')
    assert.equal((await store.descriptor(digest)).digest, digest)
    return w.fake.count('contentInfo') - before
  }
  assert.equal(await infoCalls(w.small.digest), 1)
  assert.equal(await infoCalls(w.small.digest), 1, 'nobody follows the changes: containerd is asked every time')

  const ac = new AbortController()
  const changes = store.changes(ac.signal)[Symbol.asyncIterator]()
  let pending = changes.next()
  assert.equal(await infoCalls(w.small.digest), 1)
  assert.equal(await infoCalls(w.small.digest), 0, 'followed: remembered')
  assert.equal(await infoCalls(w.config.digest), 1)
  // An event for other content changes nothing; a deletion drops only the deleted content.
  w.fake.emit({ type: 'image-create', name: 'example.com/org/other:v1', labels: {} })
  assert.deepEqual((await pending).value, { contentDeleted: false })
  pending = changes.next()
  w.fake.emit({ type: 'content-delete', digest: w.small.digest })
  assert.deepEqual((await pending).value, { contentDeleted: true })
  pending = changes.next()
  assert.equal(await infoCalls(w.small.digest), 1, 'deleted: asked again')
  assert.equal(await infoCalls(w.config.digest), 0)

  ac.abort()
  assert.deepEqual(await pending, { done: true, value: undefined })
  assert.equal(await infoCalls(w.config.digest), 1, 'no longer followed: forgotten')
})

test('blobs missing from the directory but known to containerd are read over gRPC', async (t) => {
  const w = await world(t)
  const hidden = await w.add(MediaType.octetStream, randomBytes(100), false)
  const store = new ContainerdStore({ client: w.fake, contentPath: w.root })
  const chunks: Buffer[] = []
  for await (const c of await store.open(hidden.digest)) chunks.push(c as Buffer)
  assert.equal(Buffer.concat(chunks).byteLength, 100)
  assert.equal(w.fake.count('readContent'), 1)
})

test('media types: learned beats fingerprinted, fingerprints are cached, big unknown content is octet-stream', async (t) => {
  const w = await world(t)
  const store = new ContainerdStore({ client: w.fake, contentPath: w.root })
  // Fingerprinted from the bytes, once.
  assert.equal((await store.descriptor(w.config.digest)).mediaType, MediaType.ociConfig)
  assert.equal((await store.descriptor(w.small.digest)).mediaType, MediaType.octetStream)
  // Files whose bytes now say something else (had they been read again, the answers would change).
  const manifestLike = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: {}, layers: [] })
  await writeFile(join(w.root, 'blobs', 'sha256', w.config.digest.slice(7)), 'not json')
  assert.equal((await store.descriptor(w.config.digest)).mediaType, MediaType.ociConfig, 'cached, not read again')
  assert.equal(w.fake.count('readContent'), 0)
  // Not read at all above 4 MiB.
  await writeFile(join(w.root, 'blobs', 'sha256', w.big.digest.slice(7)), manifestLike)
  assert.equal((await store.descriptor(w.big.digest)).mediaType, MediaType.octetStream)
  assert.equal(w.fake.count('readContent'), 0)
  // Walking the image teaches the layers' declared types.
  const walked = await store.walk(w.manifest.digest)
  assert.deepEqual(walked.map((d) => d.digest), [w.manifest.digest, w.config.digest, w.small.digest, w.big.digest])
  assert.equal((await store.descriptor(w.small.digest)).mediaType, MediaType.ociLayerGzip)
  assert.equal((await store.descriptor(w.big.digest)).mediaType, MediaType.ociLayerGzip)
  // Image records teach their targets' types, even for content whose bytes would say otherwise.
  const odd = await w.add(MediaType.octetStream, JSON.stringify({ schemaVersion: 2, manifests: [] }))
  w.fake.images.set('example.com/org/odd:v1', { ...odd, mediaType: MediaType.dockerManifestList })
  await store.listImages()
  assert.equal((await store.descriptor(odd.digest)).mediaType, MediaType.dockerManifestList)
  store.learnMediaType({ digest: 'not-a-digest', mediaType: 'x' })
  store.learnMediaType({ digest: odd.digest, mediaType: '' })
  assert.equal((await store.descriptor(odd.digest)).mediaType, MediaType.dockerManifestList)
})

test('concurrent descriptor calls fingerprint the same content once', async (t) => {
  const w = await world(t)
  w.fake.root = ''
  const store = new ContainerdStore({ client: w.fake })
  const results = await Promise.all(Array.from({ length: 10 }, async () => await store.descriptor(w.config.digest)))
  assert.ok(results.every((d) => d.mediaType === MediaType.ociConfig))
  assert.equal(w.fake.count('readContent'), 1)
})

test('resolve learns the target and treats names containerd rejects as absent', async (t) => {
  const w = await world(t)
  const store = new ContainerdStore({ client: w.fake, contentPath: w.root })
  assert.equal(await store.resolve('example.com/org/app:v1'), w.manifest.digest)
  await assert.rejects(store.resolve(''), NotFoundError)
  assert.equal((await store.descriptor(w.manifest.digest)).mediaType, MediaType.ociManifest)
})

test('listImages skips names that are not image references', async (t) => {
  const w = await world(t)
  w.fake.images.set('sha256:' + 'c'.repeat(64), w.manifest)
  w.fake.images.set('example.com/org/app@' + w.manifest.digest, w.manifest)
  w.fake.images.set('not a name', w.manifest)
  const store = new ContainerdStore({ client: w.fake, contentPath: w.root })
  const images = await store.listImages()
  assert.deepEqual(images, [
    { name: 'example.com/org/app:v1', registry: 'example.com', repository: 'org/app', tag: 'v1', digest: w.manifest.digest, mediaType: MediaType.ociManifest },
    { name: 'example.com/org/app@' + w.manifest.digest, registry: 'example.com', repository: 'org/app', digest: w.manifest.digest, mediaType: MediaType.ociManifest },
  ])
})

test('sha512 content is read from blobs/sha512', async (t) => {
  const w = await world(t)
  const data = randomBytes(500)
  const hex = createHash('sha512').update(data).digest('hex')
  await mkdir(join(w.root, 'blobs', 'sha512'))
  await writeFile(join(w.root, 'blobs', 'sha512', hex), data)
  const store = new ContainerdStore({ client: w.fake, contentPath: w.root })
  const chunks: Buffer[] = []
  for await (const c of await store.open(`sha512:${hex}`)) chunks.push(c as Buffer)
  assert.ok(Buffer.concat(chunks).equals(data))
})

test('close closes only a client the store made itself', async (t) => {
  const w = await world(t)
  await new ContainerdStore({ client: w.fake }).close()
  assert.equal(w.fake.closed, false)
  const own = new ContainerdStore({ socket: join(w.root, 'none.sock'), contentPath: w.root })
  await assert.rejects(own.resolve('example.com/org/app:v1'), StoreUnavailableError)
  await own.close()
  await assert.rejects(own.resolve('example.com/org/app:v1'), StoreUnavailableError)
})

test('LruMap evicts the least recently used entry', () => {
  const lru = new LruMap<string, number>(2)
  lru.set('a', 1)
  lru.set('b', 2)
  assert.equal(lru.get('a'), 1)
  lru.set('c', 3)
  assert.equal(lru.has('b'), false)
  assert.equal(lru.get('a'), 1)
  assert.equal(lru.get('c'), 3)
  assert.equal(lru.size, 2)
  assert.throws(() => new LruMap(0), RangeError)
})
