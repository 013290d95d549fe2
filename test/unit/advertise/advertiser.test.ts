import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { Advertiser, type StoreChange } from '../../../src/advertise/index.ts'
import { Metrics } from '../../../src/metrics/index.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { RequestFilter } from '../../../src/oci/filter.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { waitFor } from '../../helpers/wait.ts'

const logger = pino({ level: 'silent' })

function addImage (store: MemoryStore, name: string, seed: string): { top: string, config: string, layer: string } {
  const layer = store.addBlob(`layer-${seed}`, MediaType.ociLayerGzip)
  const config = store.addBlob(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed }))
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: config, size: 1 },
    layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer, size: 1 }],
  })
  const top = store.addBlob(manifest)
  store.addImage(name, top)
  return { top, config, layer }
}

/** A change feed the test pushes into. */
function feed (): { push: (c: StoreChange) => void, source: (signal: AbortSignal) => AsyncIterable<StoreChange> } {
  const queue: StoreChange[] = []
  let notify: (() => void) | undefined
  return {
    push: (c) => { queue.push(c); notify?.() },
    source: async function * (signal) {
      while (!signal.aborted) {
        const next = queue.shift()
        if (next !== undefined) { yield next; continue }
        await new Promise<void>((resolve) => { notify = resolve; signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      }
    },
  }
}

async function providers (router: MemoryRouter, key: string): Promise<string[]> {
  const out: string[] = []
  for await (const p of router.lookup(key, { count: 10 })) out.push(p.id)
  return out
}

describe('advertiser', () => {
  it('advertises tags and present digests, follows changes, withdraws deletions, honours filters', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self', addresses: ['10.0.0.1'] })
    const other = new MemoryRouter(network, { id: 'other', addresses: ['10.0.0.2'] })
    const store = new MemoryStore()
    const metrics = new Metrics({ defaultMetrics: false })
    const a = addImage(store, 'docker.io/library/app:1.0', 'a')
    addImage(store, 'docker.io/library/skip:latest', 'skip')
    const changes = feed()
    const advertiser = new Advertiser({ store, router: self, logger, metrics, changes: changes.source, debounceMs: 5, filter: await RequestFilter.create({ registryFilters: [':latest$'] }) })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    try {
      await waitFor(() => advertiser.ready, { what: 'first pass' })
      for (const key of ['docker.io/library/app:1.0', a.top, a.config, a.layer]) assert.deepEqual(await providers(other, key), ['self'], key)
      assert.deepEqual(await providers(other, 'docker.io/library/skip:latest'), [], 'filtered image is not advertised')
      assert.equal((await metrics.registry.getSingleMetric('spegel_advertised_image_tags')?.get())?.values[0]?.value, 1)
      assert.equal((await metrics.registry.getSingleMetric('spegel_advertised_content_digests')?.get())?.values[0]?.value, 3)

      // A new tag appears live.
      const b = addImage(store, 'ghcr.io/org/tool:v2', 'b')
      changes.push({ contentDeleted: false })
      await waitFor(async () => (await providers(other, 'ghcr.io/org/tool:v2')).length === 1, { what: 'new image advertised' })
      assert.deepEqual(await providers(other, b.layer), ['self'])

      // A layer goes missing (GC): it is withdrawn, the rest stays.
      store.deleteBlob(a.layer)
      changes.push({ contentDeleted: true })
      await waitFor(async () => (await providers(other, a.layer)).length === 0, { what: 'missing layer withdrawn' })
      assert.deepEqual(await providers(other, a.top), ['self'])

      // The tag is removed: its key is withdrawn.
      store.deleteImage('ghcr.io/org/tool:v2')
      changes.push({ contentDeleted: false })
      await waitFor(async () => (await providers(other, 'ghcr.io/org/tool:v2')).length === 0, { what: 'deleted tag withdrawn' })
      assert.deepEqual(await providers(other, b.layer), [])
    } finally {
      ac.abort()
      await running
    }
  })

  it('advertises content as soon as it lands, before its image exists, and withdraws it if it goes', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self' })
    const other = new MemoryRouter(network, { id: 'other' })
    const store = new MemoryStore()
    const changes = feed()
    const advertiser = new Advertiser({ store, router: self, logger, changes: changes.source, debounceMs: 5 })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    try {
      await waitFor(() => advertiser.ready, { what: 'first pass' })
      const layer = store.addBlob('a layer still being pulled', MediaType.ociLayerGzip)
      changes.push({ contentDeleted: false, created: layer })
      await waitFor(async () => (await providers(other, layer)).length === 1, { what: 'landed layer advertised' })
      store.deleteBlob(layer)
      changes.push({ contentDeleted: true })
      await waitFor(async () => (await providers(other, layer)).length === 0, { what: 'removed layer withdrawn' })
    } finally {
      ac.abort()
      await running
    }
  })

  it('stops advertising content that landed for an image it does not share once that image exists', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self' })
    const other = new MemoryRouter(network, { id: 'other' })
    const store = new MemoryStore()
    const changes = feed()
    const filter = new RequestFilter({ mirroredRegistries: ['https://docker.io'] })
    const advertiser = new Advertiser({ store, router: self, logger, filter, changes: changes.source, debounceMs: 5 })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    try {
      await waitFor(() => advertiser.ready, { what: 'first pass' })
      // A pull from a registry that is not mirrored (say, a private one): its layer lands first, the image after.
      const layer = store.addBlob('layer-private', MediaType.ociLayerGzip)
      changes.push({ contentDeleted: false, created: layer })
      await waitFor(async () => (await providers(other, layer)).length === 1, { what: 'landed layer advertised while its image is unknown' })
      const image = addImage(store, 'private.example/team/secret:1', 'private')
      assert.equal(image.layer, layer)
      changes.push({ contentDeleted: false })
      await waitFor(async () => (await providers(other, image.layer)).length === 0, { what: 'the layer withdrawn once it is known to be the unshared image\'s' })
      assert.equal(advertiser.has(image.layer), false)
      assert.equal(advertiser.has(image.top), false)
    } finally {
      ac.abort()
      await running
    }
  })

  it('withdraws a digest a peer was sent here for once it is gone without an event, and ignores digests it never advertised', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self' })
    const other = new MemoryRouter(network, { id: 'other' })
    const store = new MemoryStore()
    const image = addImage(store, 'docker.io/library/app:1', 'gc')
    const advertiser = new Advertiser({ store, router: self, logger, debounceMs: 5, resyncIntervalMs: 60_000 })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    try {
      await waitFor(async () => (await providers(other, image.layer)).length === 1, { what: 'layer advertised' })
      // containerd's garbage collector removes the layer: no event.
      const withdrawals: string[][] = []
      const withdraw = self.withdraw.bind(self)
      self.withdraw = async (keys, options) => { withdrawals.push(keys); await withdraw(keys, options) }
      store.collectBlob(image.layer)
      advertiser.missing('sha256:' + '0'.repeat(64))
      await new Promise((resolve) => setTimeout(resolve, 50))
      assert.deepEqual(withdrawals, [], 'a digest never advertised changes nothing')
      assert.deepEqual(await providers(other, image.layer), ['self'], 'without a miss the cached walk still advertises it')
      advertiser.missing(image.layer)
      await waitFor(async () => (await providers(other, image.layer)).length === 0, { what: 'the gone layer withdrawn' })
      assert.deepEqual(withdrawals, [[image.layer]])
      assert.deepEqual(await providers(other, image.top), ['self'], 'the manifest, still here, stays advertised')
      assert.deepEqual(await providers(other, 'docker.io/library/app:1'), ['self'], 'and so does the tag')
    } finally {
      ac.abort()
      await running
    }
  })

  it('does not lose a change that arrives while a pass is running', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self' })
    const other = new MemoryRouter(network, { id: 'other' })
    const store = new MemoryStore()
    // Once `hold` is set, a pass stops right after listing the images until the test releases it.
    let hold: { listed: PromiseWithResolvers<void>, release: PromiseWithResolvers<void> } | undefined
    const listImages = store.listImages.bind(store)
    store.listImages = async (options) => {
      const images = await listImages(options)
      if (hold !== undefined) {
        hold.listed.resolve()
        await hold.release.promise
      }
      return images
    }
    const changes = feed()
    const advertiser = new Advertiser({ store, router: self, logger, changes: changes.source, debounceMs: 5, resyncIntervalMs: 60_000 })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    try {
      await waitFor(() => advertiser.ready, { what: 'first pass' })
      const held = { listed: Promise.withResolvers<void>(), release: Promise.withResolvers<void>() }
      hold = held
      changes.push({ contentDeleted: false }) // starts a pass, held after listing
      await held.listed.promise
      hold = undefined
      addImage(store, 'docker.io/library/late:1', 'late') // lands after the pass listed the images
      changes.push({ contentDeleted: false })
      held.release.resolve()
      await waitFor(async () => (await providers(other, 'docker.io/library/late:1')).length === 1, { what: 'late image advertised without waiting for the resync' })
    } finally {
      ac.abort()
      await running
    }
  })

  it('never advertises an image whose manifest is absent', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self' })
    const other = new MemoryRouter(network, { id: 'other' })
    const store = new MemoryStore()
    const a = addImage(store, 'docker.io/library/gone:1', 'g')
    store.deleteBlob(a.top)
    const advertiser = new Advertiser({ store, router: self, logger })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    await waitFor(() => advertiser.ready, { what: 'first pass' })
    ac.abort()
    await running
    assert.deepEqual(await providers(other, 'docker.io/library/gone:1'), [])
    assert.deepEqual(await providers(other, a.layer), [])
  })

  it('follows the store\'s own change feed (store.changes), as the daemon wires it', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self', addresses: ['10.0.0.1'] })
    const other = new MemoryRouter(network, { id: 'other', addresses: ['10.0.0.2'] })
    const store = new MemoryStore()
    // No periodic re-read within the test: only the feed can make the advertiser see the new image.
    const advertiser = new Advertiser({ store, router: self, logger, changes: (signal) => store.changes(signal), debounceMs: 5, resyncIntervalMs: 3_600_000 })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    try {
      await waitFor(async () => advertiser.ready, { what: 'first pass' })
      const a = addImage(store, 'docker.io/library/app:1.0', 'a')
      await waitFor(async () => (await providers(other, 'docker.io/library/app:1.0')).length === 1, { what: 'new image advertised' })
      assert.deepEqual(await providers(other, a.layer), ['self'])
      store.deleteImage('docker.io/library/app:1.0')
      await waitFor(async () => (await providers(other, 'docker.io/library/app:1.0')).length === 0, { what: 'deleted image withdrawn' })
    } finally {
      ac.abort()
      await running
    }
  })
})
