import type { Logger } from '../log/index.ts'
import type { Metrics } from '../metrics/index.ts'
import { tagReference } from '../oci/reference.ts'
import type { RequestFilter } from '../oci/filter.ts'
import type { Router } from '../routing/types.ts'
import type { ContentStore, ImageRecord, StoreChange } from '../store/types.ts'
import { walkImage } from '../store/walk.ts'
import { Backoff, pause } from '../util/backoff.ts'

export type { StoreChange }

/**
 * Something that says "the store changed", as `ContentStore.changes` does (the store's own feed, or a test's). It
 * throws when the stream breaks. Content deletions invalidate cached image walks (a layer may have gone); created
 * content is advertised at once, before its image is complete, so other nodes pulling the same image can fetch
 * finished layers.
 */
export type ChangeFeed = (signal: AbortSignal) => AsyncIterable<StoreChange>

/** Bound on content tracked outside images (a pull in progress has a few dozen blobs). */
const maxLoose = 10_000

export interface AdvertiserOptions {
  store: ContentStore
  router: Router
  logger: Logger
  /** Images rejected by the filter are neither served nor advertised. */
  filter?: RequestFilter
  metrics?: Metrics
  /** Live changes; without it the store is only re-read every resyncIntervalMs. */
  changes?: ChangeFeed
  /** Changes arriving within this window are handled in one pass. */
  debounceMs?: number
  /** Full re-read even without events, to heal anything missed. */
  resyncIntervalMs?: number
}

export interface AdvertisedImage {
  name: string
  registry: string
  digest: string
  tag?: string
  /** Digests of the image's content that is present and advertised. */
  digests: string[]
}

/**
 * Keeps the router's advertisements equal to what the store really holds: every tag (`<registry>/<repo>:<tag>`) and
 * every digest reachable from an image whose content is present. Each pass lists the images, walks the new ones
 * (walks of a top digest are cached: content is immutable, only its presence changes), advertises what appeared and
 * withdraws what went away. Passes run at start, after containerd events (image create/update/delete, content
 * create/delete), after the event stream reconnects (containerd restarted), and periodically.
 */
export class Advertiser {
  private readonly options: AdvertiserOptions
  private readonly walks = new Map<string, string[]>()
  /** Content announced by create events and not (yet) part of any image. */
  private readonly loose = new Set<string>()
  private advertised = new Set<string>()
  private images: AdvertisedImage[] = []
  private dirty = true
  private wake: (() => void) | undefined
  private synced = false

  constructor (options: AdvertiserOptions) {
    this.options = options
  }

  /** True after the first complete pass. */
  get ready (): boolean {
    return this.synced
  }

  /** Whether `key` (a digest, or a tag reference `registry/repository:tag`) is advertised now: what this node shares. */
  has (key: string): boolean {
    return this.advertised.has(key)
  }

  /** What is advertised now, for the debug page. */
  snapshot (): { images: AdvertisedImage[], keys: number } {
    return { images: this.images, keys: this.advertised.size }
  }

  /** Runs until the signal aborts; never throws for store or router trouble (it logs and retries). */
  async run (signal: AbortSignal): Promise<void> {
    const feed = this.options.changes !== undefined ? this.follow(this.options.changes, signal) : Promise.resolve()
    const resync = this.options.resyncIntervalMs ?? 5 * 60_000
    const retry = new Backoff({ minMs: 100, maxMs: 10_000 })
    while (!signal.aborted) {
      if (this.dirty) {
        this.dirty = false
        try {
          await this.pass(signal)
          retry.reset()
          // A change that arrived during the pass (its wake-up found nobody asleep) gets its own pass now.
          if (this.dirty) {
            await this.sleep(this.options.debounceMs ?? 100, signal)
            continue
          }
        } catch (err) {
          if (signal.aborted) break
          this.dirty = true
          this.options.logger.warn({ err }, 'could not sync advertisements, retrying')
          await this.sleep(retry.next(), signal)
          continue
        }
      }
      await this.sleep(resync, signal)
      this.dirty = true
    }
    await feed
  }

  /**
   * A peer was sent here for `digest` (this node advertises it) and the store no longer has it: containerd's garbage
   * collector removes content without an event (layers discarded after unpacking, the content of a removed image).
   * The images that held it are walked again and what is gone is withdrawn, so peers stop being sent here for it.
   * Digests this node does not advertise are ignored, so a peer asking for anything cannot make it do work.
   */
  missing (digest: string): void {
    if (!this.advertised.has(digest)) return
    for (const [top, digests] of this.walks) if (top === digest || digests.includes(digest)) this.walks.delete(top)
    this.changed()
  }

  /** Marks the state stale; the run loop makes a pass after the debounce window. */
  changed (): void {
    if (this.dirty) return
    this.dirty = true
    setTimeout(() => this.wake?.(), this.options.debounceMs ?? 100).unref()
  }

  private async follow (changes: ChangeFeed, signal: AbortSignal): Promise<void> {
    const resubscribe = new Backoff({ minMs: 100, maxMs: 5_000 })
    while (!signal.aborted) {
      try {
        for await (const event of changes(signal)) {
          if (event.contentDeleted) this.walks.clear()
          if (event.created !== undefined && this.loose.size < maxLoose) this.loose.add(event.created)
          resubscribe.reset()
          this.changed()
        }
      } catch (err) {
        if (signal.aborted) return
        this.options.logger.warn({ err }, 'containerd event stream broke, resubscribing')
      }
      // Not wakeable: this.wake belongs to the run loop, and taking it would leave the loop asleep until the resync.
      await resubscribe.wait(signal)
      // Whatever happened while the stream was down is found by a full pass.
      this.walks.clear()
      this.changed()
    }
  }

  private async pass (signal: AbortSignal): Promise<void> {
    const { store, router, filter, metrics } = this.options
    const records = await store.listImages({ signal })
    const wanted = new Set<string>()
    const images: AdvertisedImage[] = []
    const seenTops = new Set<string>()
    const perRegistry = new Map<string, { tags: number, images: Set<string>, content: Set<string> }>()
    /** Content of images this node does not share: content that landed for them is not advertised either. */
    const unshared = new Set<string>()
    for (const record of records) {
      if (filter?.rejectsImage(record.registry, record.repository, record.tag) === true) {
        if (this.loose.size > 0) {
          for (const d of await this.walk(record, signal)) unshared.add(d)
          seenTops.add(record.digest)
        }
        continue
      }
      const digests = await this.walk(record, signal)
      seenTops.add(record.digest)
      if (digests.length === 0) continue // top manifest absent: nothing servable
      const image: AdvertisedImage = { name: record.name, registry: record.registry, digest: record.digest, digests }
      const stats = perRegistry.get(record.registry) ?? { tags: 0, images: new Set(), content: new Set() }
      perRegistry.set(record.registry, stats)
      if (record.tag !== undefined) {
        image.tag = record.tag
        wanted.add(tagReference(record.registry, record.repository, record.tag))
        stats.tags++
      }
      stats.images.add(record.digest)
      for (const d of digests) { wanted.add(d); stats.content.add(d) }
      images.push(image)
    }
    for (const top of this.walks.keys()) if (!seenTops.has(top)) this.walks.delete(top)
    for (const digest of this.loose) {
      // Now part of an image: advertised with it, or not at all.
      if (wanted.has(digest) || unshared.has(digest)) { this.loose.delete(digest); continue }
      try {
        await store.descriptor(digest, { signal })
        wanted.add(digest)
      } catch {
        this.loose.delete(digest)
      }
    }

    const added = [...wanted].filter((k) => !this.advertised.has(k))
    const removed = [...this.advertised].filter((k) => !wanted.has(k))
    if (removed.length > 0) await router.withdraw(removed, { signal })
    if (added.length > 0) await router.advertise(added, { signal })
    this.advertised = wanted
    this.images = images
    this.synced = true
    if (added.length > 0 || removed.length > 0) this.options.logger.info({ added: added.length, removed: removed.length, total: wanted.size }, 'advertisements updated')
    if (metrics !== undefined) {
      metrics.advertisedImageTags.reset()
      metrics.advertisedImageDigests.reset()
      metrics.advertisedContentDigests.reset()
      for (const [registry, s] of perRegistry) {
        metrics.advertisedImageTags.set({ registry }, s.tags)
        metrics.advertisedImageDigests.set({ registry }, s.images.size)
        metrics.advertisedContentDigests.set({ registry }, s.content.size)
      }
    }
  }

  /** Digests of an image's present content; cached per top digest, re-checked when a cached digest went missing. */
  private async walk (record: ImageRecord, signal: AbortSignal): Promise<string[]> {
    const cached = this.walks.get(record.digest)
    if (cached !== undefined) return cached
    const digests = (await walkImage(this.options.store, record.digest, { signal })).map((d) => d.digest)
    this.walks.set(record.digest, digests)
    return digests
  }

  /** Waits `ms`; changed() (through this.wake) or the signal ends the wait early. */
  private async sleep (ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return
    const woken = new AbortController()
    const wake = (): void => { woken.abort() }
    this.wake = wake
    try {
      await pause(ms, AbortSignal.any([signal, woken.signal]))
    } finally {
      if (this.wake === wake) this.wake = undefined
    }
  }
}
