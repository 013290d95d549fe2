// A private DHT (--router-psk-file): members share a swarm key; a node with another key, or with none, cannot connect
// to them, so it can neither join their DHT nor put provider records into it nor find theirs. go-libp2p's private
// networks use the same protector and key file: the Go DHT peer of test/go/dhtpeer (-psk-file) is a member with the
// same key, and an outsider with another.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'node:test'
import { StaticBootstrapper } from '../../../src/routing/bootstrap.ts'
import type { Libp2pRouter } from '../../../src/routing/libp2p.ts'
import { formatSwarmKey } from '../../../src/routing/psk.ts'
import { requireGoDhtPeer, startGoDhtPeer, type GoDhtPeer } from '../../helpers/go-dht-peer.ts'
import { freePorts } from '../../helpers/ports.ts'
import { closeAll, loopbackIp, startRouter, tcpPort } from '../../helpers/routing.ts'
import { waitFor } from '../../helpers/wait.ts'
import { atLeast, collect, lookupUntil } from '../../routing/conformance.ts'

test('only nodes with the same swarm key join a private DHT and see its records', async (t) => {
  const started: Libp2pRouter[] = []
  t.after(async () => { await closeAll(started) })
  const key = randomBytes(32)
  const start = async (i: number, psk: Uint8Array | undefined, seed: string[]): Promise<Libp2pRouter> => {
    const r = await startRouter(loopbackIp(i), new StaticBootstrapper(seed), { exploreAfterJoinMs: [], lookupCacheTtlMs: 0, ...(psk !== undefined ? { psk } : {}) })
    started.push(r)
    return r
  }
  const a = await start(0, key, [])
  const seed = [`/ip4/${loopbackIp(0)}/tcp/${tcpPort(a)}`]
  const member = await start(1, key, seed)
  const stranger = await start(2, randomBytes(32), seed)
  const open = await start(3, undefined, seed)

  await waitFor(() => member.status().routingTableSize === 1 && a.status().routingTableSize === 1, { timeoutMs: 15_000, what: 'the member and a to know each other' })
  await a.advertise(['sha256:' + 'a'.repeat(64)])
  await stranger.advertise(['sha256:' + 'b'.repeat(64)])
  await open.advertise(['sha256:' + 'c'.repeat(64)])
  await a.idle()
  assert.deepEqual((await lookupUntil(member, 'sha256:' + 'a'.repeat(64), atLeast(1), { timeoutMs: 10_000 })).map((p) => p.id), [a.peerId], 'a member finds a member\'s record')

  // The outsiders keep trying (bootstrap retries with backoff) and never get in.
  await sleep(3_000)
  for (const outsider of [stranger, open]) {
    assert.equal(outsider.status().routingTableSize, 0, 'an outsider has nobody in its routing table')
    assert.equal(outsider.ready(), false, 'an outsider with candidates it cannot reach is not ready')
    assert.deepEqual(await collect(outsider, 'sha256:' + 'a'.repeat(64), 3), [], 'an outsider finds no member\'s record')
  }
  assert.equal(a.status().routingTableSize, 1, 'a knows only the member')
  assert.deepEqual(a.peers().map((p) => p.id), [member.peerId], 'and is connected to nobody else')
  for (const k of ['b', 'c']) assert.deepEqual(await collect(member, 'sha256:' + k.repeat(64), 3), [], `an outsider's record (${k}) never reaches a member`)
})

test('go-libp2p\'s private network and ours are one: the Go DHT peer with the same key joins, with another it cannot', async (t) => {
  requireGoDhtPeer()
  const started: Libp2pRouter[] = []
  const goPeers: GoDhtPeer[] = []
  const dir = await mkdtemp(join(tmpdir(), 'spegel-psk-go-'))
  t.after(async () => {
    await Promise.allSettled(goPeers.map(async (p) => { await p.stop() }))
    await closeAll(started)
    await rm(dir, { recursive: true, force: true })
  })
  const key = randomBytes(32)
  const keyFile = join(dir, 'swarm.key')
  const otherFile = join(dir, 'other.key')
  await writeFile(keyFile, formatSwarmKey(key))
  await writeFile(otherFile, formatSwarmKey(randomBytes(32)))
  const ours = await startRouter(loopbackIp(20), new StaticBootstrapper([]), { exploreAfterJoinMs: [], psk: key })
  started.push(ours)
  const seed = `/ip4/${loopbackIp(20)}/tcp/${tcpPort(ours)}/p2p/${ours.peerId}`
  const startGo = async (i: number, pskFile: string): Promise<GoDhtPeer> => {
    const [listenPort, controlPort] = await freePorts(2)
    const peer = await startGoDhtPeer({ listen: `${loopbackIp(i)}:${listenPort!}`, control: `127.0.0.1:${controlPort!}`, bootstrap: [seed], pskFile, name: `dhtpeer-${i}` })
    goPeers.push(peer)
    return peer
  }
  const member = await startGo(21, keyFile)
  await waitFor(async () => ours.peers().some((p) => p.id === member.id) && (await member.peers()).some((p) => p.id === ours.peerId), {
    timeoutMs: 20_000, what: 'the Go peer with the same key and ours to know each other',
  })
  const stranger = await startGo(22, otherFile)
  await sleep(3_000)
  assert.deepEqual(await stranger.peers(), [], 'the Go peer with another key has nobody in its routing table')
  assert.ok(!ours.peers().some((p) => p.id === stranger.id), 'and ours never connected to it')
  assert.ok(stranger.logs().length > 0)
})
