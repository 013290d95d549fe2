// Clients that hang up mid-body, against the two paths that write blob bytes with reused buffers: a local file
// (sendFileRange) and a peer-proxied blob (PeerBody.writeTo). Neither may leave a rejection unhandled (that ends the
// daemon) nor lose a buffer (the pool's in-use count must come back to zero).
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { MediaType } from '../../../src/oci/mediatypes.ts'
import { bufferStats } from '../../../src/registry/buffers.ts'
import { FileReads, sendFileRange } from '../../../src/registry/sendfile.ts'
import { MemoryStore } from '../../../src/store/index.ts'
import { waitFor } from '../../helpers/wait.ts'
import { startPeerPair, type PeerPair } from './peer-pair.ts'

const blob = randomBytes(24 * 1024 * 1024)
const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex')

const unhandled: unknown[] = []
const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
before(() => { process.on('unhandledRejection', onUnhandled) })
after(() => { process.off('unhandledRejection', onUnhandled) })

/** GETs `path` and hangs up after `bytes` bytes of the response (head included), by reset or by a normal close. */
async function hangUp (port: number, host: string, path: string, bytes: number, reset: boolean): Promise<void> {
  const socket = net.connect({ host, port })
  socket.on('error', () => {})
  await new Promise<void>((resolve) => {
    let got = 0
    socket.on('data', (d: Buffer) => {
      got += d.length
      if (got >= bytes) { if (reset) socket.resetAndDestroy(); else socket.destroy(); resolve() }
    })
    socket.on('close', () => { resolve() })
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
  })
}

async function waitForBuffersBack (): Promise<void> {
  await waitFor(() => bufferStats().inUse === 0, { timeoutMs: 2_000, what: 'every transfer buffer back in the pool', context: () => JSON.stringify(bufferStats()) })
}

describe('clients hanging up mid-body', () => {
  // Reads on the thread pool are counted (the file's read method); reads on the event loop go to the file descriptor,
  // so only their number is seen: their loop is the same one.
  for (const onEventLoop of [false, true]) {
    it(`a local file, read ${onEventLoop ? 'on the event loop' : 'on the thread pool'}: no unhandled rejection, no lost buffer, and the next client gets every byte`, async (t) => {
      const dir = await mkdtemp(join(tmpdir(), 'spegel-hangup-'))
      t.after(async () => { await rm(dir, { recursive: true, force: true }) })
      const path = join(dir, 'blob')
      await writeFile(path, blob)
      const failures: Error[] = []
      let syncReads = 0
      /** Bytes each failed transfer read from its file. */
      const readByFailed: number[] = []
      const server = http.createServer((_req, res) => {
        void (async () => {
          const file = await open(path)
          let read = 0
          // Counts what the transfer reads: one whose client is gone must stop reading, not finish the file.
          const counting = new Proxy(file, {
            get: (target, name) => {
              if (name === 'fd') syncReads++
              return name === 'read'
                ? async (...args: Parameters<typeof file.read>) => { const r = await target.read(...args); read += r.bytesRead; return r }
                : Reflect.get(target, name, target) as unknown
            },
          })
          try {
            res.writeHead(200, { 'content-length': String(blob.length) })
            await sendFileRange(counting, 0, blob.length - 1, res, undefined, undefined, new FileReads({ onEventLoop }))
          } catch (err) {
            failures.push(err as Error)
            readByFailed.push(read)
          } finally {
            await file.close()
          }
        })()
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      t.after(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
      const port = (server.address() as AddressInfo).port
      await Promise.all(Array.from({ length: 40 }, async (_, i) => { await hangUp(port, '127.0.0.1', '/', 1000 + i * 150_000, i % 2 === 0) }))
      await waitForBuffersBack()
      assert.deepEqual(unhandled, [])
      assert.ok(failures.length >= 30, `${failures.length} transfers saw their client go away`)
      for (const err of failures) assert.equal(err.name, 'ClientGoneError', err.message)
      // Clients hang up within the first 6 MB; what socket buffers took and one read ahead come on top, not the rest.
      const readOn = readByFailed.filter((n) => n > 16 * 1024 * 1024)
      assert.deepEqual(readOn, [], 'transfers whose client had gone kept reading the file')
      if (onEventLoop) assert.ok(syncReads > 0, 'no read was made on the event loop')
      else assert.equal(syncReads, 0)
      const res = await fetch(`http://127.0.0.1:${port}/`)
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob)
    })
  }

  describe('a peer-proxied blob', () => {
    let pair: PeerPair
    let port = 0
    before(async () => {
      const store = new MemoryStore()
      store.addBlob(blob, MediaType.ociLayerGzip)
      pair = await startPeerPair(store, [digest], { subnet: 201, resolveTimeoutMs: 50 })
      port = pair.port
    })
    after(async () => { await pair.close() })

    it('no unhandled rejection, no lost buffer, and the next client gets every byte', async () => {
      const path = `/v2/library/app/blobs/${digest}?ns=docker.io`
      await Promise.all(Array.from({ length: 40 }, async (_, i) => { await hangUp(port, '127.0.201.1', path, 1000 + i * 150_000, i % 2 === 1) }))
      await waitForBuffersBack()
      assert.deepEqual(unhandled, [])
      const res = await fetch(`http://127.0.201.1:${port}${path}`)
      assert.equal(res.status, 200)
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob)
      await waitForBuffersBack()
    })
  })
})
