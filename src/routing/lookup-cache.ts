import type { LookupOptions, Peer } from './types.ts'

/** Runs one provider query for a key; yields providers as found; ends when the query ends or `signal` aborts. */
export type ProviderQuery = (key: string, signal: AbortSignal) => AsyncIterable<Peer>

export interface LookupCacheOptions {
  query: ProviderQuery
  /** How long a finished query's answer is reused (Spegel: 5 s). 0 disables reuse (single-flight remains). */
  ttlMs: number
  /** Upper bound for one query, so background queries cannot pile up. */
  queryTimeoutMs: number
  onError?: (key: string, err: unknown) => void
}

interface Entry {
  peers: Peer[]
  done: boolean
  failed: boolean
  startedAt: number
  finishedAt: number
  changed: Promise<void>
  notify: () => void
}

/**
 * Single-flight plus a short-lived cache of provider queries, keyed by routing key.
 *
 * Concurrent lookups of one key share one DHT query and each sees every provider as soon as it is found. The query
 * is not bound to any caller: when callers stop early (count reached, a short resolve timeout), it runs on (up to
 * `queryTimeoutMs`) so that the next request for the key, typically a retry moments later, is answered from the
 * cache. A finished answer is reused while younger than `ttlMs`; when it holds fewer providers than asked for it is
 * reused only while younger than `ttlMs / 2` (Spegel's refresh rule), so newly advertised content shows up quickly.
 */
export class LookupCache {
  private readonly options: LookupCacheOptions
  private readonly entries = new Map<string, Entry>()
  private readonly shutdown = new AbortController()

  constructor (options: LookupCacheOptions) {
    this.options = options
  }

  async * lookup (key: string, options: LookupOptions): AsyncGenerator<Peer, void, undefined> {
    const { count, signal } = options
    const aborted = (): boolean => signal?.aborted === true
    if (count < 1 || aborted() || this.shutdown.signal.aborted) return
    const entry = this.entryFor(key, count)
    let next = 0
    while (true) {
      while (next < entry.peers.length) {
        if (aborted()) return
        const peer = entry.peers[next++] as Peer
        yield { id: peer.id, addresses: [...peer.addresses] }
        if (next >= count) return
      }
      if (entry.done) return
      if (!await waitOrAbort(entry.changed, signal)) return
    }
  }

  /** Aborts all running queries and forgets cached answers. */
  close (): void {
    this.shutdown.abort()
    this.entries.clear()
  }

  private entryFor (key: string, count: number): Entry {
    const now = Date.now()
    const cached = this.entries.get(key)
    if (cached !== undefined) {
      if (!cached.done) return cached
      const age = now - cached.finishedAt
      const fresh = age < this.options.ttlMs && (cached.peers.length >= count || age < this.options.ttlMs / 2)
      if (fresh && !cached.failed) return cached
      this.entries.delete(key)
    }
    const entry = this.start(key, now)
    this.entries.set(key, entry)
    return entry
  }

  private start (key: string, now: number): Entry {
    let notify!: () => void
    const entry: Entry = {
      peers: [],
      done: false,
      failed: false,
      startedAt: now,
      finishedAt: 0,
      changed: new Promise<void>((resolve) => { notify = resolve }),
      notify: () => {},
    }
    entry.notify = () => {
      const resolve = notify
      entry.changed = new Promise<void>((r) => { notify = r })
      resolve()
    }
    const signal = AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(this.options.queryTimeoutMs)])
    void (async () => {
      try {
        for await (const peer of this.options.query(key, signal)) {
          if (entry.peers.some((p) => p.id === peer.id)) continue
          entry.peers.push(peer)
          entry.notify()
        }
      } catch (err) {
        if (!signal.aborted) {
          entry.failed = true
          this.options.onError?.(key, err)
        }
      } finally {
        entry.done = true
        entry.finishedAt = Date.now()
        entry.notify()
        if (this.options.ttlMs <= 0 || entry.failed) {
          if (this.entries.get(key) === entry) this.entries.delete(key)
        } else {
          // Evict, so keys looked up once do not accumulate.
          setTimeout(() => {
            if (this.entries.get(key) === entry) this.entries.delete(key)
          }, this.options.ttlMs).unref()
        }
      }
    })()
    return entry
  }
}

/** Resolves true when `p` settles first, false when `signal` aborts first. */
async function waitOrAbort (p: Promise<void>, signal?: AbortSignal): Promise<boolean> {
  if (signal === undefined) {
    await p
    return true
  }
  if (signal.aborted) return false
  let onAbort!: () => void
  const aborted = new Promise<boolean>((resolve) => {
    onAbort = () => resolve(false)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([p.then(() => true), aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
