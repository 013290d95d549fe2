import assert from 'node:assert/strict'
import { request } from 'node:http'
import { connect } from 'node:net'
import { describe, test } from 'node:test'
import { isReadinessRequest, startCleanupProbeServer } from '../../../src/cleanup/index.ts'

interface Response { status: number, body: string }

async function send (port: number, method: string, path: string, host = '127.0.0.1'): Promise<Response> {
  return await new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body }) })
    })
    req.on('error', reject)
    req.end()
  })
}

describe('cleanup probe server', () => {
  // Spegel's check answered 200 to any GET and to any method on the probe path (an AND instead of an OR).
  const table: Array<[string, string, number]> = [
    ['GET', '/readyz', 200],
    ['HEAD', '/readyz', 200],
    ['GET', '/readyz?verbose=1', 200],
    ['POST', '/readyz', 404],
    ['PUT', '/readyz', 404],
    ['DELETE', '/readyz', 404],
    ['OPTIONS', '/readyz', 404],
    ['GET', '/other', 404],
    ['GET', '/', 404],
    ['GET', '/healthz', 404],
    ['GET', '/readyz/', 404],
    ['GET', '/readyz/x', 404],
    ['HEAD', '/other', 404],
    ['POST', '/other', 404],
  ]

  test('status table over a real socket', async (t) => {
    const server = await startCleanupProbeServer({ addr: '127.0.0.1:0' })
    t.after(server.close)
    for (const [method, path, status] of table) {
      const response = await send(server.address.port, method, path)
      assert.equal(response.status, status, `${method} ${path}`)
      assert.equal(response.body, '', `${method} ${path}`)
    }
  })

  test('isReadinessRequest table', () => {
    for (const [method, path, status] of table) {
      assert.equal(isReadinessRequest(method, path), status === 200, `${method} ${path}`)
    }
    assert.equal(isReadinessRequest('GET', 'http://node:8080/readyz'), true)
    assert.equal(isReadinessRequest('GET', 'http://node:8080/other'), false)
    assert.equal(isReadinessRequest(undefined, '/readyz'), false)
    assert.equal(isReadinessRequest('GET', undefined), false)
  })

  test('absolute-form request target', async (t) => {
    const server = await startCleanupProbeServer({ addr: '127.0.0.1:0' })
    t.after(server.close)
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(server.address.port, '127.0.0.1', () => {
        socket.end(`GET http://127.0.0.1:${server.address.port}/readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      })
      let data = ''
      socket.setEncoding('utf8')
      socket.on('data', (chunk: string) => { data += chunk })
      socket.on('end', () => { resolve(data) })
      socket.on('error', reject)
    })
    assert.match(raw, /^HTTP\/1\.1 200 /)
  })

  test('listens on IPv6 loopback', async (t) => {
    const server = await startCleanupProbeServer({ addr: '[::1]:0' })
    t.after(server.close)
    assert.equal(server.address.host, '::1')
    assert.equal((await send(server.address.port, 'GET', '/readyz', '::1')).status, 200)
  })

  test('`:port` listens on every interface', async (t) => {
    const server = await startCleanupProbeServer({ addr: ':0' })
    t.after(server.close)
    assert.equal((await send(server.address.port, 'GET', '/readyz', '127.0.0.1')).status, 200)
  })

  test('aborting the signal closes it; close is idempotent', async () => {
    const controller = new AbortController()
    const server = await startCleanupProbeServer({ addr: '127.0.0.1:0', signal: controller.signal })
    assert.equal((await send(server.address.port, 'GET', '/readyz')).status, 200)
    controller.abort()
    await server.close()
    await server.close()
    await assert.rejects(send(server.address.port, 'GET', '/readyz'), { code: 'ECONNREFUSED' })
  })

  test('an already aborted signal is refused', async () => {
    await assert.rejects(startCleanupProbeServer({ addr: '127.0.0.1:0', signal: AbortSignal.abort() }), { name: 'AbortError' })
  })

  test('a port in use is an error', async (t) => {
    const first = await startCleanupProbeServer({ addr: '127.0.0.1:0' })
    t.after(first.close)
    await assert.rejects(startCleanupProbeServer({ addr: `127.0.0.1:${first.address.port}` }), { code: 'EADDRINUSE' })
  })

  test('logs unsupported requests', async (t) => {
    const warnings: unknown[] = []
    const server = await startCleanupProbeServer({ addr: '127.0.0.1:0', logger: { info: () => {}, warn: (obj) => { warnings.push(obj) } } })
    t.after(server.close)
    await send(server.address.port, 'POST', '/readyz')
    assert.deepEqual(warnings, [{ method: 'POST', path: '/readyz' }])
  })
})
