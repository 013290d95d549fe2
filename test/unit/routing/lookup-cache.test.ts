import assert from 'node:assert/strict'
import { test } from 'node:test'
import { LookupCache } from '../../../src/routing/lookup-cache.ts'
import type { Peer } from '../../../src/routing/types.ts'

const peer = (n: number): Peer => ({ id: `p${n}`, addresses: [`10.0.0.${n}`] })
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

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

test('finished answers are reused within the TTL; short answers only within half of it', async () => {
  let queries = 0
  const cache = new LookupCache({
    ttlMs: 300,
    queryTimeoutMs: 5_000,
    query: async function * () { queries++; yield peer(1) },
  })
  const all = async (count: number): Promise<Peer[]> => { const out: Peer[] = []; for await (const p of cache.lookup('k', { count })) out.push(p); return out }
  assert.deepEqual(await all(1), [peer(1)])
  assert.deepEqual(await all(1), [peer(1)])
  assert.equal(queries, 1)
  await sleep(180) // past ttl/2: an answer with fewer peers than asked is refreshed
  await all(3)
  assert.equal(queries, 2)
  await sleep(350) // past ttl: refreshed whatever the count
  await all(1)
  assert.equal(queries, 3)
  cache.close()
})

test('the query outlives callers that stop early, so a retry is answered from the cache', async () => {
  let queries = 0
  const cache = new LookupCache({
    ttlMs: 2_000,
    queryTimeoutMs: 5_000,
    query: async function * () { queries++; await sleep(100); yield peer(1); yield peer(2) },
  })
  const out: Peer[] = []
  for await (const p of cache.lookup('k', { count: 5, signal: AbortSignal.timeout(20) })) out.push(p)
  assert.deepEqual(out, [])
  await sleep(150)
  const retry: Peer[] = []
  for await (const p of cache.lookup('k', { count: 5 })) retry.push(p)
  assert.deepEqual(retry, [peer(1), peer(2)])
  assert.equal(queries, 1)
  cache.close()
})

test('a failed query is reported and not cached; close aborts running queries', async () => {
  const errors: unknown[] = []
  let queries = 0
  let sawAbort = false
  const cache = new LookupCache({
    ttlMs: 10_000,
    queryTimeoutMs: 5_000,
    onError: (_, err) => errors.push(err),
    query: async function * (key, signal) {
      queries++
      if (key === 'bad') throw new Error('boom')
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => { sawAbort = true; resolve() }))
      yield * []
    },
  })
  for await (const _ of cache.lookup('bad', { count: 1 })) assert.fail('no peers expected')
  for await (const _ of cache.lookup('bad', { count: 1 })) assert.fail('no peers expected')
  assert.equal(queries, 2)
  assert.equal(errors.length, 2)
  const pending = (async () => { for await (const _ of cache.lookup('slow', { count: 1 })) assert.fail('no peers expected') })()
  await sleep(10)
  cache.close()
  await pending
  assert.equal(sawAbort, true)
})
