// The pool's idle trim asks for a major collection (the image runs node with --expose-gc), at most one per 30 s: a
// collection marks the whole heap, and a node going idle every few seconds asked for one each time.
import assert from 'node:assert/strict'
import { after, before, describe, it, mock } from 'node:test'
import { bufferStats, giveBuffer, takeBuffer } from '../../../src/registry/buffers.ts'

const collections: Array<{ type?: string, execution?: string }> = []
const withGc = globalThis as { gc?: (options?: { type?: string, execution?: string }) => void }
const original = withGc.gc

/** Takes and gives back enough chunks that the pool holds more than it keeps when idle, so a trim is scheduled. */
function burst (): void {
  const taken = Array.from({ length: 9 }, () => takeBuffer())
  for (const b of taken) giveBuffer(b)
  assert.equal(bufferStats().inUse, 0)
}

describe('the buffer pool\'s idle trim', () => {
  before(() => {
    withGc.gc = (options) => { collections.push(options ?? {}) }
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 })
  })
  after(() => {
    mock.timers.reset()
    if (original === undefined) delete withGc.gc
    else withGc.gc = original
  })

  it('asks for one major collection per 30 s however often the pool goes idle, and one at the end for the rest', () => {
    burst()
    mock.timers.tick(1_999)
    assert.equal(collections.length, 0, 'not before 2 s idle')
    mock.timers.tick(1)
    assert.deepEqual(collections, [{ type: 'major', execution: 'async' }])
    assert.ok(bufferStats().pooled <= 4, 'the pool gave back all but one slab')

    // Idle again every few seconds: trims happen, collections wait.
    for (let i = 0; i < 5; i++) {
      burst()
      mock.timers.tick(2_000)
    }
    assert.equal(collections.length, 1, 'no second collection within 30 s of the first')
    // 10 s have passed since the first collection.
    mock.timers.tick(30_000 - 5 * 2_000 - 1)
    assert.equal(collections.length, 1)
    mock.timers.tick(1)
    assert.equal(collections.length, 2, 'the put-off collection comes 30 s after the first')

    // Quiet for longer than 30 s: the next trim collects at once.
    mock.timers.tick(60_000)
    assert.equal(collections.length, 2, 'nothing to collect while nothing was trimmed')
    burst()
    mock.timers.tick(2_000)
    assert.equal(collections.length, 3)
  })
})
