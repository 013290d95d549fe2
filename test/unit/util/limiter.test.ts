import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Limiter } from '../../../src/util/limiter.ts'

describe('Limiter', () => {
  it('lets `limit` holders in at once and the others in arrival order as slots come back', async () => {
    const limiter = new Limiter(2)
    const a = await limiter.acquire()
    const b = await limiter.acquire()
    const order: string[] = []
    const c = limiter.acquire().then((release) => { order.push('c'); return release })
    const d = limiter.acquire().then((release) => { order.push('d'); return release })
    await Promise.resolve()
    assert.deepEqual([limiter.running, limiter.queued, order], [2, 2, []])
    a()
    const releaseC = await c
    assert.deepEqual([limiter.running, limiter.queued, order], [2, 1, ['c']])
    b()
    const releaseD = await d
    assert.deepEqual(order, ['c', 'd'])
    releaseC()
    releaseD()
    assert.deepEqual([limiter.running, limiter.queued], [0, 0])
  })

  it('gives a slot back once, however often its release is called', async () => {
    const limiter = new Limiter(1)
    const release = await limiter.acquire()
    release()
    release()
    assert.equal(limiter.running, 0)
    const again = await limiter.acquire()
    assert.equal(limiter.running, 1)
    again()
  })

  it('rejects a waiter whose signal aborts with the reason, and the slot goes to the next one', async () => {
    const limiter = new Limiter(1)
    const held = await limiter.acquire()
    const ac = new AbortController()
    const reason = new Error('lookup timed out')
    const aborted = limiter.acquire(ac.signal)
    const next = limiter.acquire()
    ac.abort(reason)
    await assert.rejects(aborted, (err) => err === reason)
    assert.equal(limiter.queued, 1)
    held()
    const release = await next
    assert.equal(limiter.running, 1)
    release()
    assert.equal(limiter.running, 0)
  })

  it('rejects at once when the signal has already aborted, taking no slot', async () => {
    const limiter = new Limiter(1)
    await assert.rejects(limiter.acquire(AbortSignal.abort(new Error('gone'))), /gone/)
    assert.equal(limiter.running, 0)
  })

  it('refuses a limit that is not a positive integer', () => {
    for (const limit of [0, -1, 1.5, Number.NaN]) assert.throws(() => new Limiter(limit), RangeError)
  })
})
