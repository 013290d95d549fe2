// The behaviour every ContentStore must share (after Spegel's storetest): run against the in-memory store in unit tests
// and against containerd in integration tests, it proves the fake behaves like the real thing.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { parseImageName } from '../../src/oci/reference.ts'
import { NotFoundError } from '../../src/store/errors.ts'
import type { ContentStore, Descriptor, ReadOptions, StoreChange } from '../../src/store/types.ts'

export interface ConformanceFixture {
  store: ContentStore
  /** The store's expected `name`. */
  name: string
  /** A tagged image name the store holds, and the digest it points at. */
  existingRef: string
  existingRefDigest: string
  /** A well-formed name and digest the store does not hold. */
  notFoundRef: string
  notFoundDigest: string
  /** Content the store holds, as descriptor() must describe it. */
  existingDescriptor: Descriptor
  /** More content the store holds (e.g. a layer bigger than one read chunk); each is checked the same way. */
  moreDescriptors?: Descriptor[]
  /**
   * Add content to the store, and delete it, the way its backend does (for the changes() test). The content may stay
   * on disk after the delete, as containerd's does while another namespace holds it: the store must still report it
   * absent once the deletion was reported.
   */
  addContent: (bytes: Buffer) => Promise<string>
  deleteContent: (digest: string) => Promise<void>
  /** Whether the backend reports new content as a change (containerd 1.6 emits no `/content/create`). Default true. */
  reportsCreation?: boolean
  /** Called after the suite, also when it fails. */
  close?: () => Promise<void>
}

/** Registers one top-level test that runs the whole suite against a fresh fixture. */
export function storeConformance (name: string, makeFixture: () => Promise<ConformanceFixture>): void {
  test(`${name}: ContentStore conformance`, async (t) => {
    const fixture = await makeFixture()
    t.after(async () => { await fixture.close?.() })
    await runStoreConformance(t, fixture)
  })
}

const isNotFound = (err: unknown): boolean => err instanceof NotFoundError
const isInvalidDigest = (err: unknown): boolean => err instanceof Error && err.name === 'InvalidDigestError'
const isAbort = (err: unknown): boolean => err instanceof Error && err.name === 'AbortError'

/** Runs the suite as subtests of `t`, for callers that build the fixture themselves. */
export async function runStoreConformance (t: TestContext, f: ConformanceFixture): Promise<void> {
  const { store } = f
  const all = [f.existingDescriptor, ...(f.moreDescriptors ?? [])]

  await t.test('name', () => {
    assert.equal(store.name, f.name)
  })

  await t.test('resolve of a missing name throws NotFoundError', async () => {
    await assert.rejects(store.resolve(f.notFoundRef), isNotFound)
  })

  await t.test('resolve of an existing name returns its digest', async () => {
    assert.equal(await store.resolve(f.existingRef), f.existingRefDigest)
  })

  await t.test('descriptor of missing content throws NotFoundError', async () => {
    await assert.rejects(store.descriptor(f.notFoundDigest), isNotFound)
  })

  await t.test('descriptor of existing content', async () => {
    for (const d of all) assert.deepEqual(await store.descriptor(d.digest), d)
  })

  await t.test('open of missing content throws NotFoundError', async () => {
    await assert.rejects(store.open(f.notFoundDigest), isNotFound)
  })

  await t.test('open streams content that hashes to its digest', async () => {
    for (const d of all) {
      const bytes = await readAll(store, d.digest)
      assert.equal(bytes.byteLength, d.size, `size of ${d.digest}`)
      assert.equal('sha256:' + createHash('sha256').update(bytes).digest('hex'), d.digest)
    }
  })

  await t.test('open with start and end returns exactly that range', async () => {
    for (const d of all) {
      const whole = await readAll(store, d.digest)
      const last = d.size - 1
      const ranges: Array<{ start?: number, end?: number }> = [
        { start: 0, end: 0 },
        { start: 0, end: last },
        { start: 1, end: last - 1 },
        { start: last, end: last },
        { start: Math.floor(d.size / 2) },
        { end: Math.floor(d.size / 3) },
        { start: Math.max(0, last - 70_000), end: last - 1 },
      ]
      for (const range of ranges) {
        const got = await readAll(store, d.digest, range)
        const want = whole.subarray(range.start ?? 0, (range.end ?? last) + 1)
        assert.equal(got.byteLength, want.byteLength, `length of ${JSON.stringify(range)} of ${d.digest}`)
        assert.ok(got.equals(want), `bytes of ${JSON.stringify(range)} of ${d.digest}`)
      }
    }
  })

  await t.test('listImages contains the existing image', async () => {
    const images = await store.listImages()
    const record = images.find((i) => i.name === f.existingRef)
    assert.ok(record !== undefined, `${f.existingRef} in ${JSON.stringify(images.map((i) => i.name))}`)
    const ref = parseImageName(f.existingRef)
    assert.equal(record.digest, f.existingRefDigest)
    assert.equal(record.registry, ref.registry)
    assert.equal(record.repository, ref.repository)
    assert.equal(record.tag, ref.tag)
    assert.equal(record.mediaType, (await store.descriptor(f.existingRefDigest)).mediaType)
    for (const image of images) assert.doesNotThrow(() => parseImageName(image.name), image.name)
  })

  await t.test('invalid digests are rejected before anything is read', async () => {
    const hex = f.existingDescriptor.digest.slice(f.existingDescriptor.digest.indexOf(':') + 1)
    const invalid = [
      '',
      'sha256',
      hex,
      'sha256:',
      'sha256:../../../../../../etc/passwd',
      '../../../../etc/passwd',
      `sha256:${hex}/../${hex}`,
      `sha256:../sha256/${hex}`,
      `sha256:${hex.toUpperCase()}`,
      `sha256:${hex}\u0000`,
      `md5:${hex.slice(0, 32)}`,
      `../sha256:${hex}`,
    ]
    for (const digest of invalid) {
      await assert.rejects(store.descriptor(digest), isInvalidDigest, `descriptor(${JSON.stringify(digest)})`)
      await assert.rejects(store.open(digest), isInvalidDigest, `open(${JSON.stringify(digest)})`)
    }
  })

  await t.test('an aborted signal is honoured', async () => {
    const signal = AbortSignal.abort()
    await assert.rejects(store.resolve(f.existingRef, { signal }), isAbort)
    await assert.rejects(store.descriptor(f.existingDescriptor.digest, { signal }), isAbort)
    await assert.rejects(store.open(f.existingDescriptor.digest, { signal }), isAbort)
    await assert.rejects(store.listImages({ signal }), isAbort)
    const changes: StoreChange[] = []
    for await (const change of store.changes(signal)) changes.push(change)
    assert.deepEqual(changes, [], 'an aborted change feed ends at once, without throwing')
  })

  await t.test('changes reports content created and deleted, and the store answers accordingly', async () => {
    const { addContent, deleteContent } = f
    const ac = new AbortController()
    const changes = store.changes(ac.signal)[Symbol.asyncIterator]()
    // The iteration starts here; the feed is live once containerd has registered its subscription, a moment later (no
    // answer says when). Changes before that are not reported (the contract), so fresh content is added until one
    // change is seen, and only then is deletion checked.
    let pending = changes.next()
    /** Consumes changes until `ok` holds (true), or `ms` pass without one (false; the pending read is kept). */
    const seen = async (ok: (change: StoreChange) => boolean, ms: number, what: string): Promise<boolean> => {
      const deadline = performance.now() + ms
      for (;;) {
        const left = deadline - performance.now()
        if (left <= 0) return false
        let result: IteratorResult<StoreChange>
        try {
          result = await within(pending, left, what)
        } catch {
          return false
        }
        pending = changes.next()
        assert.notEqual(result.done, true, `the feed ended before ${what}`)
        if (ok(result.value as StoreChange)) return true
      }
    }
    try {
      let digest: string | undefined
      for (let attempt = 1; digest === undefined; attempt++) {
        assert.ok(attempt <= 10, 'no change was reported for 10 pieces of fresh content, 1 s apart')
        const added = await addContent(Buffer.from(`conformance changes ${process.pid} ${Date.now()} ${attempt}`))
        if (f.reportsCreation !== false) {
          if (await seen((c) => c.created === added && !c.contentDeleted, 1_000, `content ${added} was reported created`)) digest = added
        } else {
          // containerd 1.x reports deletions only: the first reported one is this content's.
          await deleteContent(added)
          if (await seen((c) => c.contentDeleted, 1_000, `content ${added} was reported deleted`)) {
            await assert.rejects(store.descriptor(added), isNotFound)
            ac.abort()
            assert.deepEqual(await within(pending, 5_000, 'the feed ended after the abort'), { done: true, value: undefined })
            return
          }
        }
      }
      // Confirmed content may be remembered by the store: the deletion below must still reach it.
      assert.equal((await store.descriptor(digest)).digest, digest)
      await deleteContent(digest)
      assert.ok(await seen((c) => c.contentDeleted, 5_000, `content ${digest} was reported deleted`), `content ${digest} was reported deleted`)
      await assert.rejects(store.descriptor(digest), isNotFound)
    } finally {
      ac.abort()
    }
    assert.deepEqual(await within(pending, 5_000, 'the feed ended after the abort'), { done: true, value: undefined })
  })
}

/** The promise's value, or a failure naming what did not happen within ms. */
async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`timed out waiting until ${what}`)) }, ms) })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}

async function readAll (store: ContentStore, digest: string, range: Omit<ReadOptions, 'signal'> = {}): Promise<Buffer> {
  const stream = await store.open(digest, range)
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array))
  return Buffer.concat(chunks)
}
