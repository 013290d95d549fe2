// A node that looks up many keys at once (a busy node starting many pods in a cluster larger than k): every lookup
// must still be answered. kad-dht refuses streams beyond its per-connection limits (32 inbound, 64 outbound), so a
// burst of queries that all meet the same few peers would fail lookups that a calmer node answers.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Libp2pRouter } from '../../../src/routing/libp2p.ts'
import { closeAll, startCluster } from '../../helpers/routing.ts'
import { waitFor } from '../../helpers/wait.ts'
import { collect } from '../../routing/conformance.ts'

test('a burst of 200 concurrent lookups of different keys from one node: every key is found', async (t) => {
  const started: Libp2pRouter[] = []
  t.after(async () => { await closeAll(started) })
  // k = 3 among 6 nodes: the routing table is never smaller than k, so lookups query the network (in a cluster smaller
  // than k the node's own records would answer) and records live on the 3 nodes closest to each key.
  const routers = await startCluster(6, { kBucketSize: 3, exploreAfterJoinMs: [], lookupCacheTtlMs: 0 }, started)
  await waitFor(() => routers.every((r) => r.ready()), { timeoutMs: 15_000, what: 'all routers ready' })
  const [asker, , , , , holder] = routers as [Libp2pRouter, Libp2pRouter, Libp2pRouter, Libp2pRouter, Libp2pRouter, Libp2pRouter]
  const keys = Array.from({ length: 200 }, (_, i) => `sha256:${i.toString(16).padStart(64, 'a')}`)
  await holder.advertise(keys)
  await holder.idle()
  // Each key is found when asked alone (publishing has reached the closest nodes).
  await waitFor(async () => (await collect(asker, keys[0] as string, 1)).length === 1, { timeoutMs: 10_000, what: 'the first key to be found' })

  const answers = await Promise.all(keys.map(async (key) => ({ key, peers: await collect(asker, key, 1) })))
  const missed = answers.filter((a) => a.peers.length === 0).map((a) => a.key)
  assert.deepEqual(missed, [], `${missed.length} of ${keys.length} lookups found nobody`)
  for (const a of answers) assert.equal(a.peers[0]?.id, holder.peerId)
})
