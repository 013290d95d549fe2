import assert from 'node:assert/strict'
import { test } from 'node:test'
import { LookupCache } from '../../../src/routing/lookup-cache.ts'
import type { Peer } from '../../../src/routing/types.ts'

const peer = (n: number): Peer => ({ id: `p${n}`, addresses: [`10.0.0.${n}`] })

test('concurrent lookups share one query and stream providers as they are found', async () => {
  let queries = 0
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  const cache = new LookupCache({
    ttlMs: 1_000,
    queryTimeoutMs: 5_000,
    query: async function * () {
      queries++
      yield peer(1)
      await gate
      yield peer(1) // duplicate: dropped
      yield peer(2)
    },
  })
  const first: Peer[] = []
  const it = cache.lookup('k', { count: 5 })[Symbol.asyncIterator]()
  const one = await it.next() // arrives before the query ends
  assert.deepEqual(one.value, peer(1))
  const second = (async () => { const out: Peer[] = []; for await (const p of cache.lookup('k', { count: 5 })) out.push(p); return out })()
  release()
  first.push(one.value as Peer)
  for (let r = await it.next(); r.done !== true; r = await it.next()) first.push(r.value)
  assert.deepEqual(first, [peer(1), peer(2)])
  assert.deepEqual(await second, [peer(1), peer(2)])
  assert.equal(queries, 1)
  cache.close()
})

test('finished answers are reused within the TTL; short answers only within half of it', async (t) => {
  // The cache ages answers by Date.now(): a mocked clock steps to either side of ttl/2 and ttl without waiting.
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 })
  let queries = 0
  const cache = new LookupCache({
    ttlMs: 300,
    queryTimeoutMs: 5_000,
    query: async function * () { queries++; yield peer(1) },
  })
  t.after(() => { cache.close() })
  const all = async (count: number): Promise<Peer[]> => { const out: Peer[] = []; for await (const p of cache.lookup('k', { count })) out.push(p); return out }
  assert.deepEqual(await all(1), [peer(1)])
  assert.deepEqual(await all(1), [peer(1)])
  assert.equal(queries, 1)
  t.mock.timers.tick(149)
  assert.deepEqual(await all(3), [peer(1)])
  assert.equal(queries, 1, 'an answer with fewer peers than asked is reused while younger than ttl/2')
  t.mock.timers.tick(1)
  await all(3)
  assert.equal(queries, 2, 'an answer with fewer peers than asked is refreshed at ttl/2')
  t.mock.timers.tick(299)
  await all(1)
  assert.equal(queries, 2, 'a complete answer is reused while younger than the ttl')
  t.mock.timers.tick(1)
  await all(1)
  assert.equal(queries, 3, 'every answer is refreshed at the ttl')
})

test('the query outlives callers that stop early, so a retry is answered from the cache', async (t) => {
  let queries = 0
  const release = Promise.withResolvers<void>()
  const finished = Promise.withResolvers<void>()
  const cache = new LookupCache({
    ttlMs: 60_000,
    queryTimeoutMs: 5_000,
    query: async function * (_key, signal) {
      queries++
      try {
        // Holds until released; a query aborted along with its caller would end here without peers.
        await Promise.race([release.promise, new Promise((resolve) => { signal.addEventListener('abort', resolve, { once: true }) })])
        if (signal.aborted) return
        yield peer(1)
        yield peer(2)
      } finally {
        finished.resolve()
      }
    },
  })
  t.after(() => { cache.close() })
  const caller = new AbortController()
  const out: Peer[] = []
  const early = (async () => { for await (const p of cache.lookup('k', { count: 5, signal: caller.signal })) out.push(p) })()
  caller.abort()
  await early
  assert.deepEqual(out, [])
  release.resolve()
  await finished.promise
  const retry: Peer[] = []
  for await (const p of cache.lookup('k', { count: 5 })) retry.push(p)
  assert.deepEqual(retry, [peer(1), peer(2)])
  assert.equal(queries, 1)
})

test('a failed query is reported and not cached; close aborts running queries', async () => {
  const errors: unknown[] = []
  let queries = 0
  let sawAbort = false
  const slowStarted = Promise.withResolvers<void>()
  const cache = new LookupCache({
    ttlMs: 10_000,
    queryTimeoutMs: 5_000,
    onError: (_, err) => errors.push(err),
    query: async function * (key, signal) {
      queries++
      if (key === 'bad') throw new Error('boom')
      slowStarted.resolve()
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => { sawAbort = true; resolve() }))
      yield * []
    },
  })
  for await (const _ of cache.lookup('bad', { count: 1 })) assert.fail('no peers expected')
  for await (const _ of cache.lookup('bad', { count: 1 })) assert.fail('no peers expected')
  assert.equal(queries, 2)
  assert.equal(errors.length, 2)
  const pending = (async () => { for await (const _ of cache.lookup('slow', { count: 1 })) assert.fail('no peers expected') })()
  await slowStarted.promise
  cache.close()
  await pending
  assert.equal(sawAbort, true)
})
