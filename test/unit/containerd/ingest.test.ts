import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { appendFile, mkdir, mkdtemp, rename, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, it } from 'node:test'
import { DownloadAbandonedError, followDownload, IngestDirectory, type ActiveDownload } from '../../../src/containerd/ingest.ts'

/** A content directory laid out as containerd 1.6 lays it out, with one download in progress. */
async function contentDir (t: { after: (fn: () => Promise<void>) => void }): Promise<{ root: string, start: (blob: Buffer, ref?: string) => Promise<{ dir: string, digest: string }> }> {
  const root = await mkdtemp(join(tmpdir(), 'spegel-ingest-'))
  t.after(async () => { await rm(root, { recursive: true, force: true }) })
  await mkdir(join(root, 'blobs', 'sha256'), { recursive: true })
  return {
    root,
    start: async (blob, ref) => {
      const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex')
      const dir = join(root, 'ingest', createHash('sha256').update(ref ?? digest).digest('hex'))
      await mkdir(dir, { recursive: true })
      await writeFile(join(dir, 'ref'), ref ?? `k8s.io/1/layer-${digest}`)
      await writeFile(join(dir, 'total'), String(blob.length))
      await writeFile(join(dir, 'data'), '')
      return { dir, digest }
    },
  }
}

async function collect (chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = []
  // A chunk is valid until the next one is asked for (the follower reuses its buffer): keep copies.
  for await (const c of chunks) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

describe('containerd downloads in progress', () => {
  it('are found by digest, with their expected size; other refs and unknown sizes are skipped', async (t) => {
    const c = await contentDir(t)
    const blob = randomBytes(1000)
    const { digest, dir } = await c.start(blob)
    await c.start(randomBytes(10), 'k8s.io/2/something-without-a-digest')
    const unknownSize = await c.start(randomBytes(20))
    await writeFile(join(unknownSize.dir, 'total'), '0')
    const ingest = new IngestDirectory({ contentPath: c.root })
    assert.deepEqual(await ingest.list(), [{ digest, total: 1000, dir }])
    assert.deepEqual(await ingest.find(digest), { digest, total: 1000, dir })
    assert.equal(await ingest.find('sha256:' + '0'.repeat(64)), undefined)
    assert.deepEqual(await new IngestDirectory({ contentPath: join(c.root, 'nope') }).list(), [])
  })

  it('are read as the bytes arrive, to the end, also across the commit (rename into blobs/)', async (t) => {
    const c = await contentDir(t)
    const blob = randomBytes(3 * 1024 * 1024 + 5)
    const { dir, digest } = await c.start(blob)
    const download: ActiveDownload = { digest, total: blob.length, dir }
    const writer = (async () => {
      for (let i = 0; i < blob.length; i += 256 * 1024) {
        await appendFile(join(dir, 'data'), blob.subarray(i, i + 256 * 1024))
        await sleep(5)
        // containerd commits by renaming the file; the reader holds it open.
        if (i === 2 * 1024 * 1024) await rename(join(dir, 'data'), join(c.root, 'blobs', 'sha256', digest.slice(7)))
        if (i >= 2 * 1024 * 1024) { await appendFile(join(c.root, 'blobs', 'sha256', digest.slice(7)), blob.subarray(i + 256 * 1024, blob.length)); break }
      }
    })()
    const read = await collect(followDownload(download, { pollMs: 2 }))
    await writer
    assert.deepEqual(read, blob)
  })

  it('are read into one buffer for the whole follow, not a fresh one per read', async (t) => {
    const c = await contentDir(t)
    const blob = randomBytes(1024 * 1024 + 7)
    const { dir, digest } = await c.start(blob)
    await appendFile(join(dir, 'data'), blob)
    const memories = new Set<ArrayBufferLike>()
    const hash = createHash('sha256')
    let chunks = 0
    for await (const chunk of followDownload({ digest, total: blob.length, dir }, { chunkSize: 64 * 1024 })) {
      memories.add(chunk.buffer)
      hash.update(chunk)
      chunks++
    }
    assert.equal('sha256:' + hash.digest('hex'), digest)
    assert.equal(chunks, 17, 'read in 64 KiB pieces')
    assert.equal(memories.size, 1, 'every chunk is a view of the same buffer')
  })

  it('are abandoned when they stall, shrink or are gone before being opened', async (t) => {
    const c = await contentDir(t)
    const blob = randomBytes(100_000)
    const stalled = await c.start(blob)
    await appendFile(join(stalled.dir, 'data'), blob.subarray(0, 1000))
    const started = performance.now()
    await assert.rejects(collect(followDownload({ digest: stalled.digest, total: blob.length, dir: stalled.dir }, { stallTimeoutMs: 100, pollMs: 5 })),
      (err: Error) => err instanceof DownloadAbandonedError && err.reason === 'stalled')
    assert.ok(performance.now() - started < 1000)

    const other = randomBytes(100_000)
    const shrinking = await c.start(other)
    await appendFile(join(shrinking.dir, 'data'), other.subarray(0, 50_000))
    const reading = followDownload({ digest: shrinking.digest, total: other.length, dir: shrinking.dir }, { stallTimeoutMs: 2000, pollMs: 5 })[Symbol.asyncIterator]()
    // Truncated once the reader has seen the bytes written so far.
    for (let got = 0; got < 50_000;) {
      const chunk = await reading.next()
      assert.ok(chunk.done !== true, 'the download ended early')
      got += chunk.value.length
    }
    await truncate(join(shrinking.dir, 'data'), 0)
    await assert.rejects(async () => { while ((await reading.next()).done !== true); }, (err: Error) => err instanceof DownloadAbandonedError && err.reason === 'shrank')

    await assert.rejects(collect(followDownload({ digest: stalled.digest, total: 1, dir: join(c.root, 'ingest', 'gone') })),
      (err: Error) => err instanceof DownloadAbandonedError && err.reason === 'gone')
  })

  it('stops when its signal aborts', async (t) => {
    const c = await contentDir(t)
    const blob = randomBytes(1000)
    const d = await c.start(blob)
    const ac = new AbortController()
    setTimeout(() => { ac.abort() }, 30)
    await assert.rejects(collect(followDownload({ digest: d.digest, total: blob.length, dir: d.dir }, { signal: ac.signal, stallTimeoutMs: 10_000 })), { name: 'AbortError' })
  })
})
