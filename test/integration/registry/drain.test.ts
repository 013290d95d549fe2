// SIGTERM while blobs are being served, against the real daemon and a real containerd: transfers in flight may finish
// within --drain-timeout, a client that stops reading is cut at the deadline, and idle keep-alive connections never
// hold the process up.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import net from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { makeImage, startContainerd, writeOciArchive, type ContainerdInstance, type TestBlob } from '../../helpers/containerd.ts'
import { startSpegelRegistry, type SpegelRegistry } from '../../helpers/spegel.ts'
import { requireKnownTool } from '../../helpers/tools.ts'

const layerBytes = 30 * 1024 * 1024

/** A raw HTTP/1.1 GET that reads only the response head, then stops reading (its socket stays paused). */
async function stalledGet (port: number, path: string): Promise<{ socket: net.Socket, head: string, closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1')
  const closed = new Promise<void>((resolve) => { socket.on('close', () => { resolve() }) })
  socket.on('error', () => {})
  const head = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('no response head within 5 s')) }, 5000)
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer)
      socket.pause()
      resolve(chunk.toString('latin1').split('\r\n\r\n')[0] ?? '')
    })
    socket.on('connect', () => { socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`) })
  })
  return { socket, head, closed }
}

/** A raw keep-alive connection that made one small request, read its whole answer and now sits idle. */
async function idleKeepAlive (port: number): Promise<{ socket: net.Socket, closed: Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1')
  const closed = new Promise<void>((resolve) => { socket.on('close', () => { resolve() }) })
  socket.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('no /livez answer within 5 s')) }, 5000)
    let buf = ''
    socket.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1')
      if (/^HTTP\/1\.1 200 [^]*\r\n\r\nok$/.test(buf)) { clearTimeout(timer); resolve() }
    })
    socket.on('connect', () => { socket.write(`GET /livez HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: keep-alive\r\n\r\n`) })
  })
  return { socket, closed }
}

function logLines (spegel: SpegelRegistry): Array<Record<string, unknown>> {
  return spegel.process.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
}

async function sha256 (body: ReadableStream<Uint8Array>): Promise<{ digest: string, size: number }> {
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of body) { hash.update(chunk); size += chunk.byteLength }
  return { digest: 'sha256:' + hash.digest('hex'), size }
}

describe('registry drain on SIGTERM', { timeout: 180_000 }, () => {
  let node: ContainerdInstance
  let layer: TestBlob
  const started: SpegelRegistry[] = []

  before(async () => {
    requireKnownTool('containerd')
    node = await startContainerd()
    const image = makeImage('docker.io/library/drain:1.0', { layerSizes: [layerBytes] })
    const found = image.blobs.find((b) => b.size > layerBytes)
    assert.ok(found !== undefined)
    layer = found
    const archive = join(node.dir, 'image.tar')
    await writeOciArchive(archive, [image])
    await node.ctr(['images', 'import', '--no-unpack', archive])
  })
  after(async () => {
    for (const s of started) await s.stop()
    await node?.stop()
  })

  async function start (drainTimeout: string): Promise<SpegelRegistry> {
    const spegel = await startSpegelRegistry({
      containerdSocket: node.socket,
      contentPath: node.contentPath,
      args: ['--bootstrap-kind=static', `--drain-timeout=${drainTimeout}`],
    })
    started.push(spegel)
    return spegel
  }

  it('cuts a client that stops reading at the deadline, lets a fast transfer finish, and exits 0', async (t) => {
    const spegel = await start('2s')
    const port = Number(new URL(spegel.url).port)
    const path = `/v2/library/drain/blobs/${layer.digest}`
    const slow = await stalledGet(port, path)
    try {
      assert.match(slow.head, /^HTTP\/1\.1 200 /)
      assert.match(slow.head, new RegExp(`\r\ncontent-length: ${layer.size}\r\n`, 'i'))
      // Lets the server fill the socket buffers and block on the stalled client.
      await new Promise((resolve) => setTimeout(resolve, 300))

      const fast = await fetch(`${spegel.url}${path}`)
      assert.equal(fast.status, 200)
      assert.ok(fast.body !== null)
      const t0 = performance.now()
      process.kill(spegel.process.pid, 'SIGTERM')
      const body = await sha256(fast.body)
      const fastMs = performance.now() - t0
      assert.equal(body.size, layer.size, 'the transfer in flight at SIGTERM completes')
      assert.equal(body.digest, layer.digest)
      assert.ok(fastMs < 2000, `the fast transfer finished within the drain timeout (${Math.round(fastMs)} ms)`)

      const status = await spegel.process.waitForExit({ timeoutMs: 15_000 })
      const exitMs = performance.now() - t0
      t.diagnostic(`fast transfer done ${Math.round(fastMs)} ms, exit ${Math.round(exitMs)} ms after SIGTERM`)
      assert.deepEqual(status, { code: 0, signal: null }, spegel.process.output())
      assert.ok(exitMs >= 1900, `the stalled transfer was given the drain timeout (exited after ${Math.round(exitMs)} ms)`)
      assert.ok(exitMs < 4000, `exited within 2 s + margin, not when the client gave up (${Math.round(exitMs)} ms)`)

      const cut = logLines(spegel).find((l) => l.msg === 'drain timeout reached, cut the remaining connections')
      assert.ok(cut !== undefined, spegel.process.output())
      assert.equal(cut.level, 'INFO')
      assert.equal(cut.drainTimeoutMs, 2000)
      assert.equal(cut.connections, 1, 'only the stalled connection was left to cut')
      assert.ok(logLines(spegel).some((l) => l.msg === 'exit gracefully'))

      // The stalled client got a truncated body and a closed connection.
      let received = 0
      slow.socket.on('data', (chunk: Buffer) => { received += chunk.length })
      slow.socket.resume()
      await slow.closed
      assert.ok(received < layer.size, `stalled client got ${received} of ${layer.size} bytes`)
    } finally {
      slow.socket.destroy()
    }
  })

  it('closes idle keep-alive connections at once and exits as soon as transfers in flight end', async (t) => {
    const spegel = await start('10s')
    const port = Number(new URL(spegel.url).port)
    const idle = await idleKeepAlive(port)
    try {
      const res = await fetch(`${spegel.url}/v2/library/drain/blobs/${layer.digest}`)
      assert.equal(res.status, 200)
      assert.ok(res.body !== null)
      const t0 = performance.now()
      process.kill(spegel.process.pid, 'SIGTERM')
      await Promise.race([idle.closed, new Promise((resolve, reject) => setTimeout(() => { reject(new Error('idle connection still open after 1 s')) }, 1000))])
      const body = await sha256(res.body)
      assert.equal(body.size, layer.size)
      assert.equal(body.digest, layer.digest)

      const status = await spegel.process.waitForExit({ timeoutMs: 15_000 })
      const exitMs = performance.now() - t0
      t.diagnostic(`exit ${Math.round(exitMs)} ms after SIGTERM`)
      assert.deepEqual(status, { code: 0, signal: null }, spegel.process.output())
      assert.ok(exitMs < 3000, `exited once the transfer ended, far below the 10 s drain timeout (${Math.round(exitMs)} ms)`)
      assert.ok(!logLines(spegel).some((l) => l.msg === 'drain timeout reached, cut the remaining connections'), spegel.process.output())
    } finally {
      idle.socket.destroy()
    }
  })
})
