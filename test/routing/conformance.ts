/**
 * Shared conformance suite for Router implementations: every Router (MemoryRouter, Libp2pRouter) must pass it,
 * which proves the in-memory twin behaves like the real DHT where callers can tell.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Peer, Router, RouterIntrospection } from '../../src/routing/types.ts'

/** A router under test: what the registry uses and what the debug page shows. */
type TestedRouter = Router & RouterIntrospection
import { waitFor } from '../helpers/wait.ts'

export interface RouterCluster {
  /** At least 3 started routers that can reach each other. */
  routers: TestedRouter[]
  /** The IPs other routers must report for `router`. */
  addressesOf(router: TestedRouter): string[]
  close(): Promise<void>
}

export interface ConformanceOptions {
  /** How long eventual visibility may take (DHT publishing is asynchronous). Default 10 s. */
  visibleWithinMs?: number
  /** How long a withdrawn key may still be found by others (record TTL, cleanup, lookup caches). Default 10 s. */
  expireWithinMs?: number
}

let keySeq = 0
const uniqueKey = (what: string): string => `conformance.example/${what}:${process.pid}-${Date.now()}-${keySeq++}`

export async function collect (router: Router, key: string, count = 10, signal?: AbortSignal): Promise<Peer[]> {
  const out: Peer[] = []
  for await (const peer of router.lookup(key, { count, ...(signal !== undefined ? { signal } : {}) })) out.push(peer)
  return out
}

/**
 * Looks `key` up on `router` until the answer satisfies `accept`, and returns that answer; a WaitTimeoutError after
 * `timeoutMs`. Publishing and expiry in a DHT are asynchronous: this waits for the observable result, not for a time.
 */
export async function lookupUntil (router: Router, key: string, accept: (peers: Peer[]) => boolean, options: { timeoutMs: number, count?: number, what?: string }): Promise<Peer[]> {
  return await waitFor(async () => {
    const peers = await collect(router, key, options.count ?? 10)
    return accept(peers) ? peers : undefined
  }, { timeoutMs: options.timeoutMs, what: options.what ?? `a lookup of ${key} on ${router.peerId} to be accepted` })
}

/** Accepts an answer with at least `n` peers. */
export const atLeast = (n: number) => (peers: Peer[]): boolean => peers.length >= n

const ids = (peers: Peer[]): string[] => peers.map((p) => p.id).sort()

export function routerConformance (name: string, createCluster: () => Promise<RouterCluster>, options: ConformanceOptions = {}): void {
  const within = options.visibleWithinMs ?? 10_000
  const expireWithin = options.expireWithinMs ?? 10_000
  describe(`Router conformance: ${name}`, () => {
    let cluster: RouterCluster | undefined
    const get = (): RouterCluster => {
      assert.ok(cluster, 'cluster was not created')
      return cluster
    }
    before(async () => { cluster = await createCluster() })
    after(async () => { await cluster?.close() })

    test('all routers become ready and have distinct peer ids', async () => {
      const { routers } = get()
      assert.ok(routers.length >= 3)
      await waitFor(() => routers.every((r) => r.ready()), { timeoutMs: within, what: 'every router to become ready' })
      assert.equal(new Set(routers.map((r) => r.peerId)).size, routers.length)
    })

    // `alone` is not compared: a seed whose bootstrap list names only itself is alone until peers dial it.
    test('status() agrees with ready(); a router among others has a routing table', async () => {
      const { routers } = get()
      await waitFor(() => routers.every((r) => r.status().routingTableSize > 0), { timeoutMs: within, what: 'every routing table to fill' })
      for (const r of routers) {
        const status = r.status()
        assert.equal(status.ready, r.ready())
        assert.equal(status.ready, true)
        assert.ok(status.routingTableSize > 0, `${r.peerId} has an empty routing table`)
      }
    })

    test('multiaddrs() name this node; peers() are other routers, never this one', async () => {
      const { routers } = get()
      const all = new Set(routers.map((r) => r.peerId))
      for (const r of routers) {
        const addrs = r.multiaddrs()
        assert.ok(addrs.length > 0, `${r.peerId} announces no address`)
        for (const a of addrs) assert.ok(a.endsWith(`/p2p/${r.peerId}`), a)
        const peers = r.peers()
        assert.ok(peers.length > 0, `${r.peerId} has no peer`)
        for (const p of peers) {
          assert.notEqual(p.id, r.peerId)
          assert.ok(all.has(p.id), `${p.id} is not one of the cluster's routers`)
        }
      }
    })

    test('a key advertised by one router is found by the others with its addresses', async () => {
      const c = get()
      const [a, b, d] = c.routers as [TestedRouter, TestedRouter, TestedRouter]
      const key = uniqueKey('advertised')
      await a.advertise([key])
      for (const other of [b, d]) {
        const found = await lookupUntil(other, key, atLeast(1), { timeoutMs: within })
        assert.deepEqual(found, [{ id: a.peerId, addresses: c.addressesOf(a) }])
      }
    })

    test('self is never returned', async () => {
      const [a, b] = get().routers as [TestedRouter, TestedRouter]
      const key = uniqueKey('self')
      await a.advertise([key])
      await b.advertise([key])
      const fromA = await lookupUntil(a, key, atLeast(1), { timeoutMs: within })
      assert.deepEqual(ids(fromA), [b.peerId])
      const fromB = await lookupUntil(b, key, atLeast(1), { timeoutMs: within })
      assert.deepEqual(ids(fromB), [a.peerId])
      const onlySelf = uniqueKey('only-self')
      await a.advertise([onlySelf])
      assert.deepEqual(await collect(a, onlySelf), [])
    })

    test('providers are de-duplicated and count is honoured', async () => {
      const routers = get().routers
      const [a, b, d] = routers as [TestedRouter, TestedRouter, TestedRouter]
      const key = uniqueKey('count')
      await b.advertise([key, key])
      await d.advertise([key])
      await b.advertise([key]) // advertising again changes nothing
      const all = await lookupUntil(a, key, atLeast(2), { timeoutMs: within, count: 10 })
      assert.deepEqual(ids(all), [b.peerId, d.peerId].sort())
      const one = await collect(a, key, 1)
      assert.equal(one.length, 1)
      assert.ok([b.peerId, d.peerId].includes(one[0]?.id ?? ''))
    })

    test('a lookup of an unknown key ends empty without hanging', async () => {
      const [a] = get().routers as [TestedRouter]
      const started = Date.now()
      assert.deepEqual(await collect(a, uniqueKey('unknown')), [])
      assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`)
    })

    test('the abort signal is honoured', async () => {
      const [a, b, d] = get().routers as [TestedRouter, TestedRouter, TestedRouter]
      // Already aborted: nothing is yielded and nothing is thrown.
      const key = uniqueKey('abort')
      await b.advertise([key])
      await d.advertise([key])
      await lookupUntil(a, key, atLeast(2), { timeoutMs: within })
      assert.deepEqual(await collect(a, key, 10, AbortSignal.abort()), [])
      // Aborted after the first provider: iteration ends there.
      const controller = new AbortController()
      const seen: Peer[] = []
      for await (const peer of a.lookup(key, { count: 10, signal: controller.signal })) {
        seen.push(peer)
        controller.abort()
      }
      assert.equal(seen.length, 1)
      // Aborted while waiting for an unknown key: ends promptly.
      const started = Date.now()
      assert.deepEqual(await collect(a, uniqueKey('abort-unknown'), 10, AbortSignal.timeout(20)), [])
      assert.ok(Date.now() - started < 2_000)
    })

    test('withdrawn keys disappear once records expire; withdrawing an unknown key is harmless', async () => {
      const c = get()
      const [a, b] = c.routers as [TestedRouter, TestedRouter]
      const key = uniqueKey('withdraw')
      const kept = uniqueKey('kept')
      await a.advertise([key, kept])
      await lookupUntil(b, key, atLeast(1), { timeoutMs: within })
      await a.withdraw([key, uniqueKey('never-advertised')])
      // The DHT has no withdraw message: remote records go when they expire.
      await lookupUntil(b, key, (peers) => peers.length === 0, { timeoutMs: expireWithin, what: 'the withdrawn key to expire' })
      assert.deepEqual(ids(await collect(b, kept)), [a.peerId], 'a key that was not withdrawn must stay')
      // Advertising again after a withdraw works.
      await a.advertise([key])
      const again = await lookupUntil(b, key, atLeast(1), { timeoutMs: within })
      assert.deepEqual(ids(again), [a.peerId])
    })

    // Last: it takes one router out of the cluster.
    test('close() makes the router unready, empties its peers and is idempotent', async () => {
      const { routers } = get()
      const last = routers[routers.length - 1] as TestedRouter
      await last.close()
      await last.close()
      assert.equal(last.ready(), false)
      assert.equal(last.status().ready, false)
      assert.deepEqual(last.peers(), [])
    })
  })
}
