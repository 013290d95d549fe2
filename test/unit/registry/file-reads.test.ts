// How blob files are read: on the event loop while reads are fast, on the thread pool for a while after a slow one.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, open, rm, writeFile, type FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { FileReads, sendFileRange } from '../../../src/registry/sendfile.ts'

const data = randomBytes(256 * 1024)

interface Counted {
  file: FileHandle
  /** Reads through the file's method (the thread pool) and through its descriptor (the event loop). */
  pool: number
  loop: number
}

async function withFile (t: { after: (fn: () => Promise<void>) => void }): Promise<Counted> {
  const dir = await mkdtemp(join(tmpdir(), 'spegel-file-reads-'))
  t.after(async () => { await rm(dir, { recursive: true, force: true }) })
  await writeFile(join(dir, 'blob'), data)
  const handle = await open(join(dir, 'blob'))
  t.after(async () => { await handle.close() })
  const counted: Counted = { file: handle, pool: 0, loop: 0 }
  counted.file = new Proxy(handle, {
    get: (target, name) => {
      if (name === 'fd') counted.loop++
      if (name === 'read') counted.pool++
      const value = Reflect.get(target, name, target) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
  return counted
}

async function readAt (reads: FileReads, file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length)
  const n = await reads.read(file, buffer, 0, length, position)
  return buffer.subarray(0, n)
}

describe('FileReads', () => {
  it('reads on the event loop (a number, not a promise) while reads are fast, and the bytes are right', async (t) => {
    const c = await withFile(t)
    const reads = new FileReads()
    const result = reads.read(c.file, Buffer.alloc(16), 0, 16, 100)
    assert.equal(typeof result, 'number')
    assert.deepEqual(await readAt(reads, c.file, 1000, 4096), data.subarray(1000, 5096))
    assert.deepEqual(await readAt(reads, c.file, data.length - 10, 4096), data.subarray(data.length - 10))
    assert.equal(c.pool, 0)
    assert.equal(c.loop, 3)
  })

  it('after a slow read, reads go to the thread pool until the pause is over', async (t) => {
    const c = await withFile(t)
    let clock = 0
    // Each look at the clock moves it: a read takes `step` ms.
    let step = 1
    const reads = new FileReads({ slowReadMs: 4, threadPoolForMs: 10_000, now: () => (clock += step) })
    await readAt(reads, c.file, 0, 1024)
    assert.deepEqual([c.loop, c.pool], [1, 0])
    step = 5
    // Slow (5 ms > 4 ms): this one was made on the event loop; the next ones go to the pool.
    await readAt(reads, c.file, 0, 1024)
    assert.deepEqual([c.loop, c.pool], [2, 0])
    step = 0
    assert.deepEqual(await readAt(reads, c.file, 4096, 1024), data.subarray(4096, 5120))
    const during = reads.read(c.file, Buffer.alloc(8), 0, 8, 0)
    assert.ok(during instanceof Promise, 'a read during the pause is a promise')
    assert.equal(await during, 8)
    assert.deepEqual([c.loop, c.pool], [2, 2])
    clock += 10_001
    await readAt(reads, c.file, 0, 1024)
    assert.deepEqual([c.loop, c.pool], [3, 2])
  })

  it('never reads on the event loop when told not to', async (t) => {
    const c = await withFile(t)
    const reads = new FileReads({ onEventLoop: false })
    assert.deepEqual(await readAt(reads, c.file, 10, 100), data.subarray(10, 110))
    assert.deepEqual([c.loop, c.pool], [0, 1])
  })
})

describe('sendFileRange buffer sizes', () => {
  it('gives a client that keeps up large buffers, with reads on the event loop as with the thread pool', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'spegel-file-reads-'))
    t.after(async () => { await rm(dir, { recursive: true, force: true }) })
    const body = randomBytes(16 * 1024 * 1024)
    await writeFile(join(dir, 'blob'), body)
    for (const onEventLoop of [true, false]) {
      let grants = 0
      let held = 0
      const allowance = { grow: (bytes: number) => { grants++; held += bytes; return true }, shrink: (bytes: number) => { held -= bytes } }
      const server = http.createServer((_req, res) => {
        void (async () => {
          const file = await open(join(dir, 'blob'))
          try {
            res.writeHead(200, { 'content-length': String(body.length) })
            await sendFileRange(file, 0, body.length - 1, res, undefined, allowance, new FileReads({ onEventLoop }))
          } catch {
            // The assertions below say what went wrong.
          } finally {
            await file.close()
          }
        })()
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      try {
        const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(body), 'the body arrived whole')
      } finally {
        server.closeAllConnections()
        await new Promise((resolve) => server.close(resolve))
      }
      assert.ok(grants > 0, `reads ${onEventLoop ? 'on the event loop' : 'on the thread pool'}: a fast client never got a large buffer`)
      assert.equal(held, 0, 'every large buffer\'s grant was given back')
    }
  })
})
