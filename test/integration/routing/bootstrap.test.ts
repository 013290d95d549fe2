// HTTP bootstrap end to end: real libp2p routers join each other through the /id endpoint another router serves.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { HttpBootstrapper } from '../../../src/routing/bootstrap.ts'
import type { Libp2pRouter } from '../../../src/routing/libp2p.ts'
import { closeAll, loopbackIp, startRouter, tcpPort } from '../../helpers/routing.ts'
import { waitFor } from '../../helpers/wait.ts'

test('http bootstrap end to end: a router joins through another router\'s /id', async (t) => {
  const routers: Libp2pRouter[] = []
  t.after(async () => { await closeAll(routers) })
  const seedBootstrap = new HttpBootstrapper({ listenAddr: '127.0.0.1:0' })
  const seed = await startRouter(loopbackIp(0), seedBootstrap)
  routers.push(seed)
  const url = `http://127.0.0.1:${seedBootstrap.port() ?? 0}/id`
  const served = await (await fetch(url)).json() as Array<{ ID: string, Addrs: string[] }>
  assert.deepEqual(served, [{ ID: seed.peerId, Addrs: [`/ip4/${loopbackIp(0)}/tcp/${tcpPort(seed)}`] }])
  const joiner = await startRouter(loopbackIp(1), new HttpBootstrapper({ url }))
  routers.push(joiner)
  await waitFor(() => joiner.peers().some((p) => p.id === seed.peerId), { timeoutMs: 10_000, what: 'joiner connected to seed' })
  await waitFor(() => seed.ready() && joiner.ready(), { timeoutMs: 10_000, what: 'both ready' })
})

test('http bootstrap end to end, Spegel v0.7 flags: a router joins through --http-bootstrap-peer', async (t) => {
  const routers: Libp2pRouter[] = []
  t.after(async () => { await closeAll(routers) })
  // As a v0.7 DaemonSet is configured: every node serves /id and names the same peer.
  const seedBootstrap = new HttpBootstrapper({ listenAddr: '127.0.0.1:0', peer: 'http://127.0.0.1:1' })
  const seed = await startRouter(loopbackIp(0), seedBootstrap)
  routers.push(seed)
  const peer = `http://127.0.0.1:${seedBootstrap.port() ?? 0}`
  assert.deepEqual(await (await fetch(`${peer}/id`)).json(), { Addrs: [`/ip4/${loopbackIp(0)}/tcp/${tcpPort(seed)}`], ID: seed.peerId })
  const joiner = await startRouter(loopbackIp(1), new HttpBootstrapper({ peer }))
  routers.push(joiner)
  await waitFor(() => joiner.peers().some((p) => p.id === seed.peerId), { timeoutMs: 10_000, what: 'joiner connected to seed' })
  await waitFor(() => seed.ready() && joiner.ready(), { timeoutMs: 10_000, what: 'both ready' })
})
