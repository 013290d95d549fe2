import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { httpRequest, httpRequestWith } from '../../../src/util/http-client.ts'

/** Two loopback servers (two origins): `a` redirects, `b` answers with what it was sent. */
describe('httpRequest', () => {
  const seen: string[] = []
  const listen = async (server: Server): Promise<string> => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }
  let a = ''
  let b = ''
  const serverB = createServer((req, res) => {
    seen.push(`${req.method} ${req.url} auth=${req.headers.authorization ?? '-'}`)
    if (req.url === '/big') { res.end('x'.repeat(100_000)); return }
    if (req.url === '/hang') { res.writeHead(200); res.write('partial'); return }
    res.writeHead(200, { 'x-twice': ['1', '2'] }).end('hello')
  })
  const serverA = createServer((req, res) => {
    seen.push(`${req.method} ${req.url} auth=${req.headers.authorization ?? '-'}`)
    if (req.url === '/same') { res.writeHead(307, { location: '/final' }).end(); return }
    if (req.url === '/final') { res.writeHead(204).end(); return }
    if (req.url === '/other') { res.writeHead(302, { location: `${b}/there` }).end(); return }
    if (req.url === '/loop') { res.writeHead(301, { location: '/loop' }).end(); return }
    res.writeHead(404).end()
  })
  before(async () => { a = await listen(serverA); b = await listen(serverB) })
  after(() => {
    serverA.closeAllConnections(); serverB.closeAllConnections()
    serverA.close(); serverB.close()
  })

  it('follows a redirect within an origin with its headers, to another origin without Authorization', async () => {
    seen.length = 0
    const same = await httpRequest(new URL(`${a}/same`), { method: 'HEAD', headers: { authorization: 'Bearer t' }, signal: AbortSignal.timeout(5_000) })
    assert.equal(same.status, 204)
    const other = await httpRequest(new URL(`${a}/other`), { method: 'GET', headers: { authorization: 'Bearer t' }, signal: AbortSignal.timeout(5_000) })
    assert.equal(other.status, 200)
    assert.equal(other.header('X-Twice'), '1, 2')
    assert.equal(other.header('x-missing'), undefined)
    assert.equal(await other.text(1024), 'hello')
    assert.deepEqual(seen, ['HEAD /same auth=Bearer t', 'HEAD /final auth=Bearer t', 'GET /other auth=Bearer t', 'GET /there auth=-'])
  })

  it('gives up after five redirects, and on schemes it does not speak', async () => {
    await assert.rejects(httpRequest(new URL(`${a}/loop`), { method: 'GET', signal: AbortSignal.timeout(5_000) }), /more than 5 redirects/)
    await assert.rejects(httpRequest(new URL('ftp://127.0.0.1/x'), { method: 'GET', signal: AbortSignal.timeout(5_000) }), /unsupported scheme/)
  })

  it('reads at most maxBytes of a body, and a body cut by the signal rejects', async () => {
    const big = await httpRequest(new URL(`${b}/big`), { method: 'GET', signal: AbortSignal.timeout(5_000) })
    assert.equal(await big.text(1000), undefined)
    const ac = new AbortController()
    const hang = await httpRequest(new URL(`${b}/hang`), { method: 'GET', signal: ac.signal })
    const text = hang.text(1000)
    ac.abort()
    await assert.rejects(text)
  })

  it('rejects when the server cannot be reached', async () => {
    const closed = createServer()
    const url = await listen(closed)
    closed.close()
    await assert.rejects(httpRequest(new URL(`${url}/x`), { method: 'HEAD', signal: AbortSignal.timeout(5_000) }), /ECONNREFUSED/)
  })

  it('goes through the proxies the environment names (absolute URL for http, CONNECT for https), not for NO_PROXY hosts', async () => {
    const asked: string[] = []
    const proxy = createServer((req, res) => { asked.push(`${req.method} ${req.url}`); res.writeHead(200, { 'x-via': 'proxy' }).end() })
    proxy.on('connect', (req, socket) => { asked.push(`CONNECT ${req.url}`); socket.end('HTTP/1.1 403 Forbidden\r\n\r\n') })
    const proxyUrl = await listen(proxy)
    try {
      const viaProxy = httpRequestWith({ HTTP_PROXY: proxyUrl, https_proxy: proxyUrl, NO_PROXY: '127.0.0.1' })
      const res = await viaProxy(new URL('http://registry.example/v2/'), { method: 'HEAD', signal: AbortSignal.timeout(5_000) })
      assert.equal(res.header('x-via'), 'proxy')
      await assert.rejects(viaProxy(new URL('https://registry.example/v2/'), { method: 'HEAD', signal: AbortSignal.timeout(5_000) }))
      // NO_PROXY: straight to the server.
      assert.equal((await viaProxy(new URL(`${b}/plain`), { method: 'GET', signal: AbortSignal.timeout(5_000) })).status, 200)
      assert.deepEqual(asked, ['HEAD http://registry.example/v2/', 'CONNECT registry.example:443'])
    } finally {
      proxy.closeAllConnections()
      proxy.close()
    }
  })
})
