import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { test, type TestContext } from 'node:test'
import { DnsBootstrapper, HttpBootstrapper, StaticBootstrapper, compareIps, peerIdUrl } from '../../../src/routing/bootstrap.ts'
import type { ResolveFn } from '../../../src/routing/bootstrap.ts'
import { BootstrapError } from '../../../src/routing/errors.ts'

const idA = '12D3KooWEfzjcBgezJbtx93HQNtjaMwne8tkw1PuGcW54oG4i4D8'
const idB = '12D3KooWRabrHQxit1t5Z9sTVQAiwoH8PXy41rZ7xpKuA8Mjrkqv'

test('static: multiaddrs with and without /p2p/ are grouped into peers', async () => {
  const b = new StaticBootstrapper([
    `/ip4/10.0.0.1/tcp/5001/p2p/${idA}`,
    `/ip6/fd00::1/tcp/5001/p2p/${idA}`,
    '/ip4/10.0.0.2/tcp/5001',
    `/p2p/${idB}`,
    ' ',
  ])
  assert.deepEqual(await b.peers(), [
    { id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] },
    { id: idB, addrs: [] },
    { addrs: ['/ip4/10.0.0.2/tcp/5001'] },
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
  assert.deepEqual(asked.map((a) => a[1]).sort(), [4, 6])
  assert.ok(asked.every((a) => a[0] === 'spegel-bootstrap.kube-system.svc.cluster.local.'))
  assert.deepEqual(peers, [
    { addrs: ['/ip4/9.9.9.9'] }, { addrs: ['/ip4/10.0.0.3'] }, { addrs: ['/ip4/10.0.0.4'] },
    { addrs: ['/ip6/2001:db8::1'] }, { addrs: ['/ip6/fd00::9'] }, { addrs: ['/ip6/fd00::10'] },
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
  assert.ok(peers.some((p) => p.addrs[0] === '/ip4/127.0.0.1'), JSON.stringify(peers))
})

test('http: /id serves this node, another node fetches it', async (t) => {
  const server = new HttpBootstrapper({ listenAddr: '127.0.0.1:0' })
  t.after(async () => { await server.close() })
  await server.start(() => ({ id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] }))
  const port = server.port()
  assert.ok(port !== undefined && port > 0)
  const url = `http://127.0.0.1:${port}/id`
  assert.deepEqual(await (await fetch(url, { method: 'POST' })).json(), [{ ID: idA, Addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] }])
  assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404)
  const client = new HttpBootstrapper({ url })
  assert.deepEqual(await client.peers(), [{ id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001', '/ip6/fd00::1/tcp/5001'] }])
  assert.deepEqual(await new HttpBootstrapper({}).peers(), [])
})

/** Listens on a loopback port, closed after the test; resolves with the server's base URL. */
async function listen (t: TestContext, server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  const address = server.address()
  assert.ok(typeof address === 'object' && address !== null)
  return `http://127.0.0.1:${address.port}`
}

test('http: first 3 entries, ids from /p2p/, errors are BootstrapErrors, timeout honoured', async (t) => {
  let body = ''
  let status = 200
  const server = createServer((req, res) => {
    if (req.url === '/slow') return // never answers
    res.writeHead(status, { 'content-type': 'application/json' }).end(body)
  })
  const base = await listen(t, server)
  const client = new HttpBootstrapper({ url: `${base}/peers` })
  body = JSON.stringify([
    { ID: '', Addrs: [`/ip4/10.0.0.1/tcp/5001/p2p/${idA}`] },
    { ID: idB, Addrs: ['/ip4/10.0.0.2/tcp/5001'] },
    { ID: '', Addrs: ['/ip4/10.0.0.3'] },
    { ID: '', Addrs: ['/ip4/10.0.0.4/tcp/5001'] },
  ])
  assert.deepEqual(await client.peers(), [
    { id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001'] },
    { id: idB, addrs: ['/ip4/10.0.0.2/tcp/5001'] },
    { addrs: ['/ip4/10.0.0.3'] },
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

// Spegel v0.7.4's --http-bootstrap-peer (pkg/routing/bootstrap.go HTTPBootstrapper): the client GETs peer + "/id" and
// reads one go-libp2p AddrInfo JSON object; the server answers /id with this node's AddrInfo as one object.
const peerUrls: Array<[peer: string, url: string | RegExp]> = [
  ['http://10.0.0.1:5002', 'http://10.0.0.1:5002/id'],
  ['http://10.0.0.1:5002/', 'http://10.0.0.1:5002/id'],
  ['https://bootstrap.example.com', 'https://bootstrap.example.com/id'],
  ['http://[fd00::1]:5002/spegel', 'http://[fd00::1]:5002/spegel/id'],
  ['10.0.0.1:5002', /invalid bootstrap URL|unsupported bootstrap URL/],
  ['ftp://10.0.0.1', /unsupported bootstrap URL/],
  ['not a url', /invalid bootstrap URL/],
]
for (const [peer, url] of peerUrls) {
  test(`http peer ${JSON.stringify(peer)}: ${typeof url === 'string' ? `fetches ${url}` : 'is refused'}`, () => {
    if (typeof url === 'string') assert.equal(peerIdUrl(peer), url)
    else assert.throws(() => new HttpBootstrapper({ peer }), (err: unknown) => err instanceof BootstrapError && url.test(err.message))
  })
}

test('http peer and http URL together are refused', () => {
  assert.throws(() => new HttpBootstrapper({ peer: 'http://a:1', url: 'http://a:1/id' }),
    (err: unknown) => err instanceof BootstrapError && /--http-bootstrap-url and --http-bootstrap-peer/.test(err.message))
})

test('http peer: /id answers one AddrInfo object, keys in go-libp2p\'s order; another node reads it', async (t) => {
  const server = new HttpBootstrapper({ listenAddr: '127.0.0.1:0', peer: 'http://127.0.0.1:1' })
  t.after(async () => { await server.close() })
  await server.start(() => ({ id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001'] }))
  const base = `http://127.0.0.1:${server.port() ?? 0}`
  for (const path of ['/id', '//id', '/id?x=1']) {
    const res = await fetch(base + path, { method: path === '/id' ? 'GET' : 'PUT' })
    assert.equal(res.status, 200, path)
    assert.equal(await res.text(), `{"Addrs":["/ip4/10.0.0.1/tcp/5001"],"ID":"${idA}"}`)
  }
  assert.equal((await fetch(`${base}/id/x`)).status, 404)
  for (const peer of [base, `${base}/`]) {
    assert.deepEqual(await new HttpBootstrapper({ peer }).peers(), [{ id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001'] }])
  }
})

test('http: without --http-bootstrap-peer, /id answers a one-element array (newer Spegel)', async (t) => {
  const server = new HttpBootstrapper({ listenAddr: '127.0.0.1:0' })
  t.after(async () => { await server.close() })
  await server.start(() => ({ id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001'] }))
  assert.equal(await (await fetch(`http://127.0.0.1:${server.port() ?? 0}/id`)).text(), `[{"Addrs":["/ip4/10.0.0.1/tcp/5001"],"ID":"${idA}"}]`)
})

test('http: answers in either shape are read, whichever flag fetched them', async (t) => {
  let body = ''
  const asked: string[] = []
  const server = createServer((req, res) => {
    asked.push(`${req.method ?? ''} ${req.url ?? ''}`)
    res.writeHead(200).end(body)
  })
  const base = await listen(t, server)
  const answers: Array<[name: string, body: string, peers: unknown]> = [
    ['v0.7 object', `{"Addrs":["/ip4/10.0.0.1/tcp/5001"],"ID":"${idA}"}`, [{ id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001'] }]],
    ['v0.7 object, id in the multiaddr', `{"Addrs":["/ip4/10.0.0.1/tcp/5001/p2p/${idB}"],"ID":""}`, [{ id: idB, addrs: ['/ip4/10.0.0.1/tcp/5001'] }]],
    ['v0.7 object without an id: dialled to learn it', '{"Addrs":["/ip4/10.0.0.2"]}', [{ addrs: ['/ip4/10.0.0.2'] }]],
    ['v0.7 object without addresses', `{"ID":"${idA}"}`, []],
    ['array', `[{"ID":"${idA}","Addrs":["/ip4/10.0.0.1/tcp/5001"]},{"ID":"${idB}","Addrs":["/ip4/10.0.0.2/tcp/5001"]}]`,
      [{ id: idA, addrs: ['/ip4/10.0.0.1/tcp/5001'] }, { id: idB, addrs: ['/ip4/10.0.0.2/tcp/5001'] }]],
    ['empty array', '[]', []],
    ['an object that is no AddrInfo', '{"not":"an address"}', BootstrapError],
    ['a string', '"x"', BootstrapError],
    ['null', 'null', BootstrapError],
    ['not JSON', 'nope', BootstrapError],
  ]
  for (const init of [{ peer: base }, { url: `${base}/peers` }]) {
    for (const [name, answer, expected] of answers) {
      body = answer
      const client = new HttpBootstrapper(init)
      if (expected === BootstrapError) await assert.rejects(client.peers(), BootstrapError, `${name} via ${JSON.stringify(init)}`)
      else assert.deepEqual(await client.peers(), expected, `${name} via ${JSON.stringify(init)}`)
    }
  }
  assert.ok(asked.every((a) => a === 'GET /id' || a === 'GET /peers'), JSON.stringify(asked))
  assert.ok(asked.includes('GET /id') && asked.includes('GET /peers'))
})
