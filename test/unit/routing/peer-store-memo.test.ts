// The peer store's merge memo against libp2p's own peer store (the one a libp2p node creates): merges that add nothing
// are skipped, and whatever can take data away (patch, save, delete, age) makes the next merge real again.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId, PeerStore } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { memoizePeerStoreMerges } from '../../../src/routing/peer-store-memo.ts'

interface Fixture {
  store: PeerStore
  peer: PeerId
  /** Merges that reached the store. */
  merges: () => number
  advance: (ms: number) => void
}

async function fixture (t: { after: (fn: () => Promise<void>) => void }): Promise<Fixture> {
  const node = await createLibp2p({ start: false })
  t.after(async () => { await node.stop() })
  const store = node.peerStore
  let merges = 0
  const real = store.merge.bind(store)
  store.merge = async (...args) => { merges++; return await real(...args) }
  let clock = 1_000
  memoizePeerStoreMerges(store, { ttlMs: 30_000, now: () => clock })
  return { store, peer: peerIdFromPrivateKey(await generateKeyPair('Ed25519')), merges: () => merges, advance: (ms) => { clock += ms } }
}

const addr = (n: number): ReturnType<typeof multiaddr> => multiaddr(`/ip4/10.0.0.${n}/tcp/5001`)

describe('peer store merge memo', () => {
  it('skips a protocol or address merge the record already holds, and makes a merge of anything new', async (t) => {
    const f = await fixture(t)
    await f.store.merge(f.peer, { protocols: ['/spegel/kad/1.0.0'] })
    await f.store.merge(f.peer, { protocols: ['/spegel/kad/1.0.0'] })
    assert.equal(f.merges(), 1)
    await f.store.merge(f.peer, { protocols: ['/ipfs/ping/1.0.0'] })
    assert.equal(f.merges(), 2)
    await f.store.merge(f.peer, { multiaddrs: [addr(1)] })
    await f.store.merge(f.peer, { multiaddrs: [addr(1)], protocols: ['/ipfs/ping/1.0.0'] })
    // With its /p2p/ suffix, as kad-dht hands on addresses: the store keeps it without.
    await f.store.merge(f.peer, { multiaddrs: [multiaddr(`${addr(1).toString()}/p2p/${f.peer.toString()}`)] })
    assert.equal(f.merges(), 3)
    await f.store.merge(f.peer, { multiaddrs: [addr(1), addr(2)] })
    assert.equal(f.merges(), 4)
    const peer = await f.store.get(f.peer)
    assert.deepEqual(peer.protocols.sort(), ['/ipfs/ping/1.0.0', '/spegel/kad/1.0.0'])
    assert.deepEqual(peer.addresses.map((a) => a.multiaddr.toString()).sort(), [addr(1).toString(), addr(2).toString()])
  })

  it('always merges other data (metadata, tags)', async (t) => {
    const f = await fixture(t)
    await f.store.merge(f.peer, { protocols: ['/a'] })
    await f.store.merge(f.peer, { protocols: ['/a'], metadata: { k: Uint8Array.from([1]) } })
    await f.store.merge(f.peer, { tags: { keep: { value: 1 } } })
    assert.equal(f.merges(), 3)
    assert.deepEqual((await f.store.get(f.peer)).metadata.get('k'), Uint8Array.from([1]))
  })

  it('merges again once the TTL since the last real merge has passed (addresses age out unless merged again)', async (t) => {
    const f = await fixture(t)
    await f.store.merge(f.peer, { multiaddrs: [addr(1)] })
    f.advance(29_000)
    await f.store.merge(f.peer, { multiaddrs: [addr(1)] })
    assert.equal(f.merges(), 1)
    f.advance(1_000)
    await f.store.merge(f.peer, { multiaddrs: [addr(1)] })
    assert.equal(f.merges(), 2)
  })

  it('forgets a peer that was patched, saved or deleted: the next merge puts back what they took away', async (t) => {
    const f = await fixture(t)
    await f.store.merge(f.peer, { multiaddrs: [addr(1)], protocols: ['/a'] })
    await f.store.patch(f.peer, { multiaddrs: [addr(2)] })
    await f.store.merge(f.peer, { multiaddrs: [addr(1)] })
    assert.equal(f.merges(), 2)
    assert.deepEqual((await f.store.get(f.peer)).addresses.map((a) => a.multiaddr.toString()).sort(), [addr(1).toString(), addr(2).toString()])

    await f.store.save(f.peer, { protocols: ['/b'] })
    await f.store.merge(f.peer, { protocols: ['/a'] })
    assert.equal(f.merges(), 3)
    assert.deepEqual((await f.store.get(f.peer)).protocols.sort(), ['/a', '/b'])

    await f.store.delete(f.peer)
    await f.store.merge(f.peer, { protocols: ['/a'] })
    assert.equal(f.merges(), 4)
    assert.deepEqual((await f.store.get(f.peer)).protocols, ['/a'])
  })
})
