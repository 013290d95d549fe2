// Thousands of malformed requests against the real daemon (real containerd behind it), over raw sockets so nothing
// is cleaned up by an HTTP client first. Every answer must be a 4xx (or a closed connection for bytes that are not
// HTTP), never a 5xx or a hang, and afterwards the daemon must still serve content byte for byte.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import net from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { makeImage, startContainerd, writeOciArchive, type ContainerdInstance, type TestImage } from '../../helpers/containerd.ts'
import { startSpegelRegistry, type SpegelRegistry } from '../../helpers/spegel.ts'
import { requireKnownTool } from '../../helpers/tools.ts'

/** Small deterministic PRNG (mulberry32) so a failing run can be replayed from its seed. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface RawResponse { status: number | undefined, closed: boolean }

/** Sends raw bytes and reads the status line; resolves when the server answers or closes. */
async function rawRequest (port: number, data: Buffer, timeoutMs = 5000): Promise<RawResponse> {
  return await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let buf = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no answer within ${timeoutMs}ms to ${JSON.stringify(data.subarray(0, 120).toString('latin1'))}`)) }, timeoutMs)
    const finish = (closed: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf)
      resolve({ status: m !== null ? Number(m[1]) : undefined, closed })
    }
    socket.on('data', (d) => { buf += d.toString('latin1'); if (buf.includes('\r\n')) finish(false) })
    socket.on('end', () => { finish(true) })
    socket.on('error', () => { finish(true) })
    socket.on('connect', () => { socket.end(data) })
  })
}

describe('daemon under malformed requests', { timeout: 300_000 }, () => {
  let node: ContainerdInstance
  let spegel: SpegelRegistry
  let image: TestImage
  let port: number

  before(async () => {
    requireKnownTool('containerd')
    node = await startContainerd()
    image = makeImage('docker.io/library/fuzz:1.0', { layerSizes: [200_000, 1000] })
    const archive = join(node.dir, 'image.tar')
    await writeOciArchive(archive, [image])
    await node.ctr(['images', 'import', '--no-unpack', archive])
    spegel = await startSpegelRegistry({ containerdSocket: node.socket, contentPath: node.contentPath, args: ['--bootstrap-kind=static'] })
    port = Number(new URL(spegel.url).port)
  })
  after(async () => {
    await spegel?.stop()
    await node?.stop()
  })

  it('answers thousands of random malformed requests with 4xx and keeps serving', async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000)
    const rand = prng(seed)
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T
    const layer = image.blobs.find((b) => b.size === 200_000 || b.size > 100_000) ?? image.blobs[0]
    assert.ok(layer !== undefined)
    const validPaths = [
      '/v2/library/fuzz/manifests/1.0?ns=docker.io',
      `/v2/library/fuzz/manifests/${image.top.digest}`,
      `/v2/library/fuzz/blobs/${layer.digest}`,
    ]
    const junk = ['..', '%2e%2e', '%2f', '%00', '\u00e9', '//', '/./', '~', '%', '%zz', ':', '@', '#', ';', '*', 'A'.repeat(300), '../../../../etc/passwd', 'sha256:', 'sha512:' + '0'.repeat(128), '?ns=', '&ns=%ff']
    const mutatePath = (p: string): string => {
      const i = Math.floor(rand() * (p.length + 1))
      switch (Math.floor(rand() * 4)) {
        case 0: return p.slice(0, i) + pick(junk) + p.slice(i)
        case 1: return p.slice(0, i) + p.slice(i + 1 + Math.floor(rand() * 5))
        case 2: return p.slice(0, i) + String.fromCharCode(33 + Math.floor(rand() * 94)) + p.slice(i)
        default: return pick(junk) + p
      }
    }
    const methods = ['GET', 'HEAD', 'GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'BREW', 'G ET', '']
    const ranges = ['bytes=0-0', 'bytes=-', 'bytes=5-1', 'bytes=--1', 'bytes=0-1,2-3', 'bytes=99999999999999999999-', 'bits=0-1', 'bytes=-0', 'bytes=abc', '', 'bytes=0-' + '9'.repeat(40)]
    const makeRequest = (): Buffer => {
      const kind = rand()
      if (kind < 0.05) return Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 200) }, () => Math.floor(rand() * 256)))
      const method = pick(methods)
      const path = mutatePath(mutatePath(pick(validPaths)))
      const headers = ['Host: mirror']
      if (rand() < 0.4) headers.push(`Range: ${pick(ranges)}`)
      if (rand() < 0.1) headers.push('X-Spegel-Mirrored: true')
      if (rand() < 0.03) headers.push(`X-Big: ${'x'.repeat(20_000 + Math.floor(rand() * 60_000))}`)
      if (rand() < 0.05) headers.push('Content-Length: 5', '', 'hello')
      if (rand() < 0.03) headers.push('Transfer-Encoding: chunked', '', 'zz')
      return Buffer.from(`${method} ${path} HTTP/1.1\r\n${headers.join('\r\n')}\r\nConnection: close\r\n\r\n`, 'latin1')
    }
    const total = 3000
    let done = 0
    const statuses = new Map<number | string, number>()
    const worker = async (): Promise<void> => {
      while (done < total) {
        done++
        const req = makeRequest()
        const res = await rawRequest(port, req)
        const key = res.status ?? 'closed'
        statuses.set(key, (statuses.get(key) ?? 0) + 1)
        if (res.status !== undefined) {
          assert.ok(res.status < 500, `seed ${seed}: ${res.status} for ${JSON.stringify(req.subarray(0, 200).toString('latin1'))}`)
        }
      }
    }
    await Promise.all(Array.from({ length: 16 }, worker))
    assert.ok((statuses.get(400) ?? 0) + (statuses.get(404) ?? 0) > total / 4, `seed ${seed}: statuses ${JSON.stringify([...statuses])}`)

    // Still alive and correct.
    const res = await fetch(`${spegel.url}/v2/library/fuzz/blobs/${layer.digest}`)
    assert.equal(res.status, 200)
    const body = Buffer.from(await res.arrayBuffer())
    assert.equal('sha256:' + createHash('sha256').update(body).digest('hex'), layer.digest)
    const tag = await fetch(`${spegel.url}/v2/library/fuzz/manifests/1.0?ns=docker.io`)
    assert.equal(tag.status, 200)
    assert.equal(tag.headers.get('docker-content-digest'), image.top.digest)
    assert.equal((await fetch(`${spegel.url}/readyz`)).status, 200)
    assert.equal(spegel.process.exitStatus, undefined, 'daemon still running')
  })

  it('shuts down gracefully on SIGTERM with exit code 0', async () => {
    const status = await spegel.process.stop('SIGTERM', 10_000)
    assert.deepEqual(status, { code: 0, signal: null })
    assert.match(spegel.process.output(), /exit gracefully/)
  })
})
