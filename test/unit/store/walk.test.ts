import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { MemoryStore } from '../../../src/store/memory.ts'
import type { Descriptor } from '../../../src/store/types.ts'
import { isMediaTypeLearner, walkImage } from '../../../src/store/walk.ts'

function add (store: MemoryStore, mediaType: string, bytes: Uint8Array | string): Descriptor {
  const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes
  return { mediaType, digest: store.addBlob(data, mediaType), size: data.byteLength }
}

function manifest (store: MemoryStore, opts: { docker?: boolean, layers?: number, shared?: Descriptor[] } = {}): Descriptor[] {
  const docker = opts.docker === true
  const config = add(store, docker ? MediaType.dockerConfig : MediaType.ociConfig,
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [randomBytes(4).toString('hex')] } }))
  const layers = [...(opts.shared ?? [])]
  for (let i = 0; i < (opts.layers ?? 2); i++) layers.push(add(store, docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip, randomBytes(100 + i)))
  const mediaType = docker ? MediaType.dockerManifest : MediaType.ociManifest
  const m = add(store, mediaType, JSON.stringify({ schemaVersion: 2, mediaType, config, layers }))
  return [m, config, ...layers]
}

function index (store: MemoryStore, children: Descriptor[], docker = false): Descriptor {
  const mediaType = docker ? MediaType.dockerManifestList : MediaType.ociIndex
  return add(store, mediaType, JSON.stringify({ schemaVersion: 2, mediaType, manifests: children.map((c, i) => ({ ...c, platform: { os: 'linux', architecture: `arch${i}` } })) }))
}

test('walkImage lists a manifest, its config and its layers', async () => {
  const store = new MemoryStore()
  const image = manifest(store, { layers: 3 })
  assert.deepEqual(await walkImage(store, image[0]!.digest), image)
})

test('walkImage follows an OCI index depth first, listing each digest once', async () => {
  const store = new MemoryStore()
  const shared = add(store, MediaType.ociLayerGzip, randomBytes(50))
  const a = manifest(store, { shared: [shared] })
  const b = manifest(store, { shared: [shared] })
  const top = index(store, [a[0]!, b[0]!])
  const got = await walkImage(store, top.digest)
  assert.deepEqual(got, [top, ...a, ...b.filter((d) => d.digest !== shared.digest)])
})

test('walkImage follows Docker manifest lists and manifests', async () => {
  const store = new MemoryStore()
  const a = manifest(store, { docker: true })
  const top = index(store, [a[0]!], true)
  assert.deepEqual(await walkImage(store, top.digest), [top, ...a])
})

test('walkImage skips absent content and everything only it references', async () => {
  const store = new MemoryStore()
  const a = manifest(store, { layers: 3 })
  const b = manifest(store)
  const top = index(store, [a[0]!, b[0]!])
  store.deleteBlob(a[3]!.digest) // a layer
  store.deleteBlob(b[0]!.digest) // a whole child manifest: its config and layers are not visited
  const got = await walkImage(store, top.digest)
  assert.deepEqual(got, [top, ...a.filter((d) => d.digest !== a[3]!.digest)])
})

test('walkImage reports each absent child with the parent that references it', async () => {
  const store = new MemoryStore()
  const a = manifest(store, { layers: 3 })
  const b = manifest(store)
  const top = index(store, [a[0]!, b[0]!])
  store.deleteBlob(a[3]!.digest)
  store.deleteBlob(b[0]!.digest)
  const missing: Array<[child: string, parent: string]> = []
  await walkImage(store, top.digest, { onMissing: (child, parent) => { missing.push([child.digest, parent.digest]) } })
  assert.deepEqual(missing.sort(), [[a[3]!.digest, a[0]!.digest], [b[0]!.digest, top.digest]].sort())
})

test('walkImage of an absent top returns nothing', async () => {
  const store = new MemoryStore()
  assert.deepEqual(await walkImage(store, 'sha256:' + 'a'.repeat(64)), [])
})

test('walkImage tells the store the media types parents declare, before looking children up', async () => {
  const store = new MemoryStore()
  const a = manifest(store)
  const top = index(store, [a[0]!])
  const learned: Descriptor[] = []
  const learner = Object.assign(Object.create(store) as MemoryStore, { learnMediaType: (d: Descriptor) => { learned.push(d) } })
  assert.ok(isMediaTypeLearner(learner))
  assert.ok(!isMediaTypeLearner(store))
  await walkImage(learner, top.digest)
  assert.deepEqual(learned.map((d) => [d.digest, d.mediaType]), a.map((d) => [d.digest, d.mediaType]))
  const viaOption: string[] = []
  await walkImage(store, top.digest, { learn: (d) => viaOption.push(d.mediaType) })
  assert.deepEqual(viaOption, a.map((d) => d.mediaType))
})

test('walkImage does not read manifests above the size limit or that are not JSON', async () => {
  const store = new MemoryStore()
  const a = manifest(store)
  assert.deepEqual(await walkImage(store, a[0]!.digest, { maxManifestSize: a[0]!.size - 1 }), [a[0]])
  const broken = add(store, MediaType.ociManifest, '{"schemaVersion": 2, "layers": [')
  assert.deepEqual(await walkImage(store, broken.digest), [broken])
})

test('walkImage ignores malformed child descriptors', async () => {
  const store = new MemoryStore()
  const layer = add(store, MediaType.ociLayerGzip, randomBytes(10))
  const m = add(store, MediaType.ociManifest, JSON.stringify({
    schemaVersion: 2,
    config: { mediaType: MediaType.ociConfig, digest: '../../etc/passwd', size: 1 },
    layers: [null, { digest: layer.digest }, { digest: layer.digest, size: -1 }, layer],
  }))
  assert.deepEqual(await walkImage(store, m.digest), [m, layer])
})

test('walkImage honours an aborted signal', async () => {
  const store = new MemoryStore()
  const a = manifest(store)
  await assert.rejects(walkImage(store, a[0]!.digest, { signal: AbortSignal.abort() }), { name: 'AbortError' })
})
