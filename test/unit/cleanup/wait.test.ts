import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, test } from 'node:test'
import { cleanupWait, InvalidAddressError, probe, ProbeFailedError, startCleanupProbeServer } from '../../../src/cleanup/index.ts'
import type { AddressResolver } from '../../../src/cleanup/index.ts'
import type { Logger } from '../../../src/log/index.ts'

// Fast settings: rounds every 20 ms instead of 2 s.
const fast = { periodMs: 20, probeTimeoutMs: 500 }

interface TestServer {
  port: number
  /** Requests seen, as `METHOD path`. */
  requests: string[]
  close: () => Promise<void>
}

/** An HTTP server whose answer to the n-th request (0-based) is chosen by `status`. */
async function startServer (host: string, status: (n: number) => number | 'hang', port = 0, delayMs = 0): Promise<TestServer> {
  const requests: string[] = []
  const server: Server = createServer((req, res) => {
    const n = requests.length
    requests.push(`${req.method ?? ''} ${req.url ?? ''}`)
    const answer = status(n)
    if (answer === 'hang') {
      return
    }
    setTimeout(() => { res.writeHead(answer, { 'content-length': '2' }).end('ok') }, delayMs)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(error.code === 'EADDRNOTAVAIL' && host === '::1'
        ? new Error('IPv6 loopback (::1) is unavailable: enable it with `sysctl -w net.ipv6.conf.lo.disable_ipv6=0`', { cause: error })
        : error)
    })
    server.listen(port, host, () => { resolve() })
  })
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    },
  }
}

const staticResolver = (addresses: string[]): AddressResolver => async () => addresses

describe('cleanupWait', () => {
  test('succeeds against a live probe server after exactly `threshold` rounds, the first one immediate', async (t) => {
    const probeServer = await startCleanupProbeServer({ addr: '127.0.0.1:0' })
    t.after(probeServer.close)
    const start = performance.now()
    const rounds: number[] = []
    const logger: Pick<Logger, 'info' | 'warn'> = { info: (obj, msg) => { if (msg === 'probe ran successfully') rounds.push((obj as { threshold: number }).threshold) }, warn: () => {} }
    await cleanupWait({ probeEndpoint: `127.0.0.1:${probeServer.address.port}`, threshold: 3, periodMs: 100, logger })
    const elapsed = performance.now() - start
    assert.deepEqual(rounds, [1, 2, 3])
    // Rounds at 0, 100 and 200 ms.
    assert.ok(elapsed >= 190 && elapsed < 1500, `took ${elapsed} ms`)
  })

  test('probes every address of the name, IPv4 and IPv6, on the same port with GET /readyz', async (t) => {
    const v4 = await startServer('127.0.0.1', () => 200)
    t.after(v4.close)
    const v6 = await startServer('::1', () => 200, v4.port)
    t.after(v6.close)
    const v4b = await startServer('127.0.0.2', () => 200, v4.port)
    t.after(v4b.close)
    const resolved: string[] = []
    const resolver: AddressResolver = async (host) => { resolved.push(host); return ['127.0.0.1', '::1', '127.0.0.2'] }
    await cleanupWait({ probeEndpoint: `spegel-cleanup.spegel.svc.cluster.local:${v4.port}`, threshold: 2, resolver, ...fast })
    assert.deepEqual(resolved, ['spegel-cleanup.spegel.svc.cluster.local', 'spegel-cleanup.spegel.svc.cluster.local'])
    for (const server of [v4, v6, v4b]) {
      assert.deepEqual(server.requests, ['GET /readyz', 'GET /readyz'])
    }
  })

  test('the default resolver takes literal IPs as they are, including bracketed IPv6', async (t) => {
    const v6 = await startServer('::1', () => 200)
    t.after(v6.close)
    await cleanupWait({ probeEndpoint: `[::1]:${v6.port}`, threshold: 2, ...fast })
    assert.equal(v6.requests.length, 2)
  })

  test('the default resolver resolves names (localhost)', async (t) => {
    // Listen on both loopbacks: localhost may resolve to either or both.
    const v4 = await startServer('127.0.0.1', () => 200)
    t.after(v4.close)
    const v6 = await startServer('::1', () => 200, v4.port)
    t.after(v6.close)
    await cleanupWait({ probeEndpoint: `localhost:${v4.port}`, threshold: 2, ...fast })
    assert.equal(v4.requests.length + v6.requests.length >= 2, true)
  })

  test('a failed probe resets the count', async (t) => {
    // Request 0 ok, 1 fails, then ok: the count goes 1, 0, 1, 2, 3.
    const server = await startServer('127.0.0.1', (n) => (n === 1 ? 503 : 200))
    t.after(server.close)
    await cleanupWait({ probeEndpoint: `127.0.0.1:${server.port}`, threshold: 3, ...fast })
    assert.equal(server.requests.length, 5)
  })

  test('one failing address fails the whole round', async (t) => {
    const good = await startServer('127.0.0.1', () => 200)
    t.after(good.close)
    const flaky = await startServer('127.0.0.2', (n) => (n < 2 ? 500 : 200), good.port)
    t.after(flaky.close)
    await cleanupWait({ probeEndpoint: `x:${good.port}`, threshold: 2, resolver: staticResolver(['127.0.0.1', '127.0.0.2']), ...fast })
    // Rounds: fail, fail, ok, ok.
    assert.equal(flaky.requests.length, 4)
    assert.ok(good.requests.length >= 2 && good.requests.length <= 4, `good saw ${good.requests.length}`)
  })

  test('a DNS failure or an empty answer resets the count', async (t) => {
    const server = await startServer('127.0.0.1', () => 200)
    t.after(server.close)
    let round = 0
    const warnings: unknown[] = []
    const resolver: AddressResolver = async () => {
      round++
      if (round === 2) {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND x'), { code: 'ENOTFOUND' })
      }
      if (round === 4) {
        return []
      }
      return ['127.0.0.1']
    }
    await cleanupWait({ probeEndpoint: `x:${server.port}`, threshold: 2, resolver, logger: { info: () => {}, warn: (obj) => { warnings.push(obj) } }, ...fast })
    // Rounds: ok(1), dns fail(0), ok(1), empty(0), ok(1), ok(2).
    assert.equal(round, 6)
    assert.equal(server.requests.length, 4)
    assert.equal(warnings.length, 2)
  })

  test('never reaches the threshold against a server answering 500; stops within the time given', async (t) => {
    const server = await startServer('127.0.0.1', () => 500)
    t.after(server.close)
    const start = performance.now()
    await assert.rejects(
      cleanupWait({ probeEndpoint: `127.0.0.1:${server.port}`, threshold: 1, signal: AbortSignal.timeout(300), ...fast }),
      { name: 'TimeoutError' },
    )
    const elapsed = performance.now() - start
    assert.ok(elapsed < 1000, `took ${elapsed} ms`)
    assert.ok(server.requests.length >= 3, `only ${server.requests.length} probes`)
  })

  test('a probe that does not answer in time fails the round', async (t) => {
    const server = await startServer('127.0.0.1', (n) => (n === 0 ? 'hang' : 200))
    t.after(server.close)
    const start = performance.now()
    await cleanupWait({ probeEndpoint: `127.0.0.1:${server.port}`, threshold: 1, periodMs: 10, probeTimeoutMs: 150 })
    assert.equal(server.requests.length, 2)
    assert.ok(performance.now() - start >= 140)
  })

  test('a refused connection fails the round', async (t) => {
    const server = await startServer('127.0.0.1', () => 200)
    const port = server.port
    await server.close()
    await assert.rejects(probe('127.0.0.1', port, 500), (error: unknown) => error instanceof ProbeFailedError && error.url === `http://127.0.0.1:${port}/readyz`)
    await assert.rejects(
      cleanupWait({ probeEndpoint: `127.0.0.1:${port}`, threshold: 1, signal: AbortSignal.timeout(150), ...fast }),
      { name: 'TimeoutError' },
    )
    t.diagnostic('refused as expected')
  })

  test('probe URLs bracket IPv6 addresses', async (t) => {
    const server = await startServer('::1', () => 404)
    t.after(server.close)
    await assert.rejects(probe('::1', server.port, 500), (error: unknown) => {
      assert.ok(error instanceof ProbeFailedError)
      assert.equal(error.url, `http://[::1]:${server.port}/readyz`)
      assert.match(error.message, /unexpected status code 404/)
      return true
    })
  })

  test('aborting while waiting between rounds rejects promptly with the abort reason', async (t) => {
    const server = await startServer('127.0.0.1', () => 200)
    t.after(server.close)
    const controller = new AbortController()
    const reason = new Error('SIGTERM')
    setTimeout(() => { controller.abort(reason) }, 100)
    const start = performance.now()
    await assert.rejects(cleanupWait({ probeEndpoint: `127.0.0.1:${server.port}`, threshold: 5, periodMs: 10_000, signal: controller.signal }), (error) => error === reason)
    assert.ok(performance.now() - start < 1000)
    assert.equal(server.requests.length, 1)
  })

  test('aborting during a hanging probe rejects promptly', async (t) => {
    const server = await startServer('127.0.0.1', () => 'hang')
    t.after(server.close)
    const start = performance.now()
    await assert.rejects(cleanupWait({ probeEndpoint: `127.0.0.1:${server.port}`, signal: AbortSignal.timeout(100), probeTimeoutMs: 5000 }), { name: 'TimeoutError' })
    assert.ok(performance.now() - start < 1000)
  })

  test('aborting during a hanging DNS lookup rejects promptly', async () => {
    const resolver: AddressResolver = async (_host, { signal }) => await new Promise((_resolve, reject) => {
      signal?.addEventListener('abort', () => { reject(signal.reason) })
    })
    await assert.rejects(cleanupWait({ probeEndpoint: 'x:1', resolver, signal: AbortSignal.timeout(50) }), { name: 'TimeoutError' })
  })

  test('an already aborted signal rejects before any probe', async (t) => {
    const server = await startServer('127.0.0.1', () => 200)
    t.after(server.close)
    await assert.rejects(cleanupWait({ probeEndpoint: `127.0.0.1:${server.port}`, signal: AbortSignal.abort() }), { name: 'AbortError' })
    assert.equal(server.requests.length, 0)
  })

  test('at most 10 probes in flight, every address probed', async (t) => {
    let inFlight = 0
    let maxInFlight = 0
    const seen = new Set<string>()
    const server = createServer((req, res) => {
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      seen.add(req.socket.localAddress ?? '')
      setTimeout(() => { inFlight--; res.writeHead(200).end() }, 40)
    })
    await new Promise<void>((resolve) => { server.listen(0, '0.0.0.0', resolve) })
    t.after(() => { server.closeAllConnections(); server.close() })
    const port = (server.address() as AddressInfo).port
    const addresses = Array.from({ length: 25 }, (_, i) => `127.0.0.${i + 1}`)
    await cleanupWait({ probeEndpoint: `x:${port}`, threshold: 1, resolver: staticResolver(addresses), ...fast })
    assert.equal(maxInFlight, 10)
    assert.equal(seen.size, 25)
  })

  test('invalid options are rejected', async () => {
    await assert.rejects(cleanupWait({ probeEndpoint: 'no-port' }), InvalidAddressError)
    await assert.rejects(cleanupWait({ probeEndpoint: ':8080' }), RangeError)
    await assert.rejects(cleanupWait({ probeEndpoint: 'x:1', threshold: 0 }), RangeError)
    await assert.rejects(cleanupWait({ probeEndpoint: 'x:1', concurrency: 0 }), RangeError)
  })
})
