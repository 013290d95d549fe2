// Regression: when containerd's event stream broke (containerd restarting), the resubscribe backoff took over the run
// loop's wake-up, so the loop slept until the periodic resync (5 min) and new content went unadvertised meanwhile.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { Advertiser, type StoreChange } from '../../../src/advertise/index.ts'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { waitFor } from '../../helpers/wait.ts'

function addImage (store: MemoryStore, name: string, seed: string): string {
  const layer = store.addBlob(`layer-${seed}`, MediaType.ociLayerGzip)
  const config = store.addBlob(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed }))
  const top = store.addBlob(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: config, size: 1 },
    layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer, size: 1 }],
  }))
  store.addImage(name, top)
  return layer
}

async function providers (router: MemoryRouter, key: string): Promise<string[]> {
  const out: string[] = []
  for await (const p of router.lookup(key, { count: 10 })) out.push(p.id)
  return out
}

describe('advertiser after the event stream breaks', () => {
  it('advertises content that arrives after a resubscription, long before the periodic resync', async () => {
    const network = new MemoryNetwork()
    const self = new MemoryRouter(network, { id: 'self', addresses: ['10.0.0.1'] })
    const other = new MemoryRouter(network, { id: 'other', addresses: ['10.0.0.2'] })
    const store = new MemoryStore()
    addImage(store, 'docker.io/library/first:1', 'first')
    // Each pass lists the images once: counts the passes that got that far.
    let listings = 0
    const listImages = store.listImages.bind(store)
    store.listImages = async (options) => {
      const images = await listImages(options)
      listings++
      return images
    }
    let subscriptions = 0
    let push: ((c: StoreChange) => void) | undefined
    // First subscription: one event, then the stream breaks (containerd went away). Second one: stays open.
    const changes = async function * (signal: AbortSignal): AsyncIterable<StoreChange> {
      subscriptions++
      if (subscriptions === 1) {
        // Breaks once the first pass has listed the images, as containerd restarting after the daemon started would.
        await waitFor(() => listings >= 1, { what: 'the first pass' })
        throw new Error('Connection dropped')
      }
      const queue: StoreChange[] = []
      let notify: (() => void) | undefined
      push = (c) => { queue.push(c); notify?.() }
      while (!signal.aborted) {
        const next = queue.shift()
        if (next !== undefined) { yield next; continue }
        await new Promise<void>((resolve) => { notify = resolve; signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      }
    }
    const advertiser = new Advertiser({ store, router: self, logger: pino({ level: 'silent' }), changes, debounceMs: 5, resyncIntervalMs: 600_000 })
    const ac = new AbortController()
    const running = advertiser.run(ac.signal)
    try {
      const pushLive = await waitFor(() => push, { timeoutMs: 3_000, what: 'the advertiser to subscribe again after the stream broke' })
      // The stream being down makes the next pass a full one: wait until it has listed the images, then add content live.
      await waitFor(() => listings >= 2, { timeoutMs: 3_000, what: 'the pass after the resubscription' })
      const layer = addImage(store, 'docker.io/library/second:1', 'second')
      pushLive({ contentDeleted: false })
      // Far below the periodic resync (10 min here): the run loop was woken by the change.
      const found = await waitFor(async () => { const ids = await providers(other, layer); return ids.length > 0 ? ids : undefined }, { timeoutMs: 3_000, what: 'content added after the resubscription to be advertised' })
      assert.deepEqual(found, ['self'])
      assert.deepEqual(await providers(other, 'docker.io/library/second:1'), ['self'])
    } finally {
      ac.abort()
      await running
    }
  })
})
