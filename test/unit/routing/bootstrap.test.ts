import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { test } from 'node:test'
import { DnsBootstrapper, HttpBootstrapper, StaticBootstrapper, compareIps } from '../../../src/routing/bootstrap.ts'
import type { ResolveFn } from '../../../src/routing/bootstrap.ts'
import { BootstrapError } from '../../../src/routing/errors.ts'
import { closeAll, loopbackIp, startRouter, tcpPort, waitFor } from './helpers.ts'
import type { Libp2pRouter } from '../../../src/routing/libp2p.ts'

const ID_A = '12D3KooWEfzjcBgezJbtx93HQNtjaMwne8tkw1PuGcW54oG4i4D8'
const ID_B = '12D3KooWRabrHQxit1t5Z9sTVQAiwoH8PXy41rZ7xpKuA8Mjrkqv'

test('static: multiaddrs with and without /p2p/ are grouped into peers', async () => {
  const b = new StaticBootstrapper([
    `/ip4/10.0.0.1/tcp/5001/p2p/${ID_A}`,
    `/ip6/fd00::1/tcp/5001/p2p/${ID_A}`,
    '/ip4/10.0.0.2/tcp/5001',
    `/p2p/${ID_B}`,
    ' '
  ])
  assert.deepEqual(await b.peers(), [
    { id: ID_A, addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] },
    { id: ID_B, addrs: [] },
    { addrs: ['/ip4/10.0.0.2/tcp/5001'] }
  ])
  assert.deepEqual(await new StaticBootstrapper([]).peers(), [])
  assert.throws(() => new StaticBootstrapper(['not-a-multiaddr']), BootstrapError)
  await assert.rejects(b.peers({ signal: AbortSignal.abort() }), { name: 'AbortError' })
})

test('dns: A and AAAA resolved separately, sorted, first 3 per family, address-only', async () => {
  const asked: Array<[string, number]> = []
  const resolve: ResolveFn = async (name, family) => {
    asked.push([name, family])
    return family === 4
      ? ['10.0.0.20', '10.0.0.3', '10.0.0.100', '10.0.0.4', '9.9.9.9']
      : ['fd00::10', 'fd00::9', '2001:db8::1', 'fd00::a:1']
  }
  const peers = await new DnsBootstrapper({ domain: 'spegel-bootstrap.kube-system.svc.cluster.local.', resolve }).peers()
  assert.deepEqual(asked.map(a => a[1]).sort(), [4, 6])
  assert.ok(asked.every(a => a[0] === 'spegel-bootstrap.kube-system.svc.cluster.local.'))
  assert.deepEqual(peers, [
    { addrs: ['/ip4/9.9.9.9'] }, { addrs: ['/ip4/10.0.0.3'] }, { addrs: ['/ip4/10.0.0.4'] },
    { addrs: ['/ip6/2001:db8::1'] }, { addrs: ['/ip6/fd00::9'] }, { addrs: ['/ip6/fd00::10'] }
  ])
  assert.ok(compareIps('fd00::9', 'fd00::a:1') < 0)
})

test('dns: one failing family is fine, both failing is a BootstrapError, no answer means no peers', async () => {
  const onlyV4: ResolveFn = async (_, family) => {
    if (family === 6) throw Object.assign(new Error('queryAaaa ENODATA'), { code: 'ENODATA' })
    return ['10.1.2.3']
  }
  assert.deepEqual(await new DnsBootstrapper({ domain: 'x', resolve: onlyV4 }).peers(), [{ addrs: ['/ip4/10.1.2.3'] }])
  const none: ResolveFn = async () => { throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' }) }
  await assert.rejects(new DnsBootstrapper({ domain: 'x', resolve: none }).peers(), BootstrapError)
  assert.deepEqual(await new DnsBootstrapper({ domain: 'x', resolve: async () => [] }).peers(), [])
  assert.throws(() => new DnsBootstrapper({ domain: '' }), BootstrapError)
})

test('dns: the system resolver answers for localhost', async () => {
  const peers = await new DnsBootstrapper({ domain: 'localhost' }).peers()
  assert.ok(peers.some(p => p.addrs[0] === '/ip4/127.0.0.1'), JSON.stringify(peers))
})

test('http: /id serves this node, another node fetches it', async (t) => {
  const server = new HttpBootstrapper({ listenAddr: '127.0.0.1:0' })
  t.after(async () => { await server.close() })
  await server.start(() => ({ id: ID_A, addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] }))
  const port = server.port()
  assert.ok(port !== undefined && port > 0)
  const url = `http://127.0.0.1:${port}/id`
  assert.deepEqual(await (await fetch(url, { method: 'POST' })).json(), [{ ID: ID_A, Addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] }])
  assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404)
  const client = new HttpBootstrapper({ url })
  assert.deepEqual(await client.peers(), [{ id: ID_A, addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] }])
  assert.deepEqual(await new HttpBootstrapper({}).peers(), [])
})

test('http: first 3 entries, ids from /p2p/, errors are BootstrapErrors, timeout honoured', async (t) => {
  let body = ''
  let status = 200
  const server = createServer((req, res) => {
    if (req.url === '/slow') return // never answers
    res.writeHead(status, { 'content-type': 'application/json' }).end(body)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  const address = server.address()
  assert.ok(typeof address === 'object' && address !== null)
  const base = `http://127.0.0.1:${address.port}`
  const client = new HttpBootstrapper({ url: `${base}/peers` })
  body = JSON.stringify([
    { ID: '', Addrs: [`/ip4/10.0.0.1/tcp/5001/p2p/${ID_A}`] },
    { ID: ID_B, Addrs: ['/ip4/10.0.0.2/tcp/5001'] },
    { ID: '', Addrs: ['/ip4/10.0.0.3'] },
    { ID: '', Addrs: ['/ip4/10.0.0.4/tcp/5001'] }
  ])
  assert.deepEqual(await client.peers(), [
    { id: ID_A, addrs: ['/ip4/10.0.0.1/tcp/5001'] },
    { id: ID_B, addrs: ['/ip4/10.0.0.2/tcp/5001'] },
    { addrs: ['/ip4/10.0.0.3'] }
  ])
  body = '{"not":"an array"}'
  await assert.rejects(client.peers(), BootstrapError)
  body = 'nope'
  await assert.rejects(client.peers(), BootstrapError)
  status = 500
  await assert.rejects(client.peers(), (err: Error) => err instanceof BootstrapError && /500/.test(err.message))
  const started = Date.now()
  await assert.rejects(new HttpBootstrapper({ url: `${base}/slow`, timeoutMs: 200 }).peers(), BootstrapError)
  assert.ok(Date.now() - started < 2_000)
  await assert.rejects(new HttpBootstrapper({ url: 'http://127.0.0.1:1/id' }).peers(), BootstrapError)
})

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
  await waitFor('joiner connected to seed', () => joiner.peers().some(p => p.id === seed.peerId), 10_000)
  await waitFor('both ready', () => seed.ready() && joiner.ready(), 10_000)
})
