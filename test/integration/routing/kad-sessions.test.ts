// GET_PROVIDERS on kept streams (KadSessions) between two real libp2p nodes running kad-dht: answers matched to their
// requests in order, one stream for many requests, closed when idle, and no caller left waiting on a peer that stops
// answering or goes away.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'
import { decodeProviders, encodeGetProviders } from '../../../src/routing/kad-message.ts'
import { KadSessions } from '../../../src/routing/kad-sessions.ts'
import { keyToCid } from '../../../src/routing/keys.ts'
import { startDhtNode, type DhtNode } from '../../../src/routing/libp2p-node.ts'
import { StaticBootstrapper } from '../../../src/routing/bootstrap.ts'
import { loopbackIp, quietLogger } from '../../helpers/routing.ts'
import { waitFor } from '../../helpers/wait.ts'

interface Pair {
  asker: DhtNode
  answerer: DhtNode
  sessions: (options?: { idleMs?: number, protocol?: string }) => { sessions: KadSessions, dials: () => number }
}

async function pair (t: { after: (fn: () => Promise<void>) => void }): Promise<Pair> {
  const start = async (i: number): Promise<DhtNode> => await startDhtNode({ listenAddr: `${loopbackIp(i)}:0`, allowLoopback: true, logger: quietLogger, bootstrapper: new StaticBootstrapper([]) })
  const shutdown = new AbortController()
  const asker = await start(40)
  t.after(async () => { shutdown.abort(); await asker.node.stop() })
  const answerer = await start(41)
  t.after(async () => { await answerer.node.stop() })
  await asker.node.dial(answerer.node.getMultiaddrs())
  return {
    asker,
    answerer,
    sessions: (options = {}) => {
      let dials = 0
      const node = { dialProtocol: async (...args: Parameters<DhtNode['node']['dialProtocol']>) => { dials++; return await asker.node.dialProtocol(...args) } }
      return { sessions: new KadSessions({ node, shutdown: shutdown.signal, ...options }), dials: () => dials }
    },
  }
}

const keyOf = (i: number): string => `sha256:${String(i).padStart(64, '0')}`
const request = (i: number): Uint8Array => encodeGetProviders(keyToCid(keyOf(i)).multihash.bytes)
const providerIds = (answer: Uint8Array): string[] => decodeProviders(answer).map((p) => peerIdFromMultihash(Digest.decode(p.id)).toString())

describe('KadSessions: DHT requests on kept streams', () => {
  it('answers many requests at once on one stream, each with its own key\'s providers', async (t) => {
    const p = await pair(t)
    const self = p.answerer.node.peerId
    // The answerer names a provider it knows addresses of: the asker (a node leaves itself out of its answers).
    const provider = p.asker.node.peerId.toString()
    await waitFor(async () => ((await p.answerer.node.peerStore.get(p.asker.node.peerId).catch(() => undefined))?.addresses.length ?? 0) > 0, { timeoutMs: 5_000, what: 'the answerer knows the asker\'s addresses' })
    for (let i = 0; i < 20; i += 2) await p.answerer.dht.providers.addProvider(keyToCid(keyOf(i)), p.asker.node.peerId)
    const { sessions, dials } = p.sessions()
    const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => await sessions.ask(self, request(i), AbortSignal.timeout(10_000))))
    answers.forEach((answer, i) => { assert.deepEqual(providerIds(answer), i % 2 === 0 ? [provider] : [], `key ${i}`) })
    // And again, one after the other, on the same stream.
    for (let i = 0; i < 4; i++) assert.deepEqual(providerIds(await sessions.ask(self, request(i), AbortSignal.timeout(10_000))), i % 2 === 0 ? [provider] : [])
    assert.equal(dials(), 1)
    assert.equal(sessions.size, 1)
  })

  it('closes a stream nothing was asked on for idleMs, and opens a new one for the next request', async (t) => {
    const p = await pair(t)
    const self = p.answerer.node.peerId
    const { sessions, dials } = p.sessions({ idleMs: 200 })
    await sessions.ask(self, request(1), AbortSignal.timeout(10_000))
    await waitFor(() => sessions.size === 0, { timeoutMs: 5_000, what: 'the idle stream closed' })
    assert.deepEqual(providerIds(await sessions.ask(self, request(1), AbortSignal.timeout(10_000))), [])
    assert.equal(dials(), 2)
  })

  it('a peer that never answers: each caller gives up by its own signal, and the stream is dropped', async (t) => {
    const p = await pair(t)
    const silent = '/spegel-test/silent/1.0.0'
    // Reads requests, answers none.
    await p.answerer.node.handle(silent, async (stream) => { for await (const chunk of stream) void chunk })
    const { sessions } = p.sessions({ protocol: silent })
    const self: PeerId = p.answerer.node.peerId
    const started = performance.now()
    const results = await Promise.allSettled([1, 2, 3].map(async (i) => await sessions.ask(self, request(i), AbortSignal.timeout(300))))
    for (const r of results) assert.equal(r.status, 'rejected')
    assert.ok(performance.now() - started < 3_000, 'callers waited for their own timeout only')
    await waitFor(() => sessions.size === 0, { timeoutMs: 5_000, what: 'the stream nobody waits on was dropped' })
  })

  it('a peer that goes away fails the requests waiting on it, and a request after it fails at once', async (t) => {
    const p = await pair(t)
    const silent = '/spegel-test/silent/1.0.0'
    await p.answerer.node.handle(silent, async (stream) => { for await (const chunk of stream) void chunk })
    const { sessions } = p.sessions({ protocol: silent })
    const self = p.answerer.node.peerId
    const waiting = sessions.ask(self, request(1), AbortSignal.timeout(30_000))
    await waitFor(() => sessions.size === 1, { timeoutMs: 5_000, what: 'the stream open' })
    const started = performance.now()
    await p.answerer.node.stop()
    await assert.rejects(waiting)
    assert.ok(performance.now() - started < 10_000, 'the waiting request failed when the peer went away')
    await assert.rejects(sessions.ask(self, request(2), AbortSignal.timeout(10_000)))
  })
})
