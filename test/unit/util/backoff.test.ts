import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Backoff, pause } from '../../../src/util/backoff.ts'

/** Whether `promise` has resolved once pending callbacks ran: no clock involved, the timers below are far off. */
async function settled (promise: Promise<void>): Promise<boolean> {
  let done = false
  void promise.then(() => { done = true })
  await new Promise((resolve) => setImmediate(resolve))
  return done
}

describe('Backoff', () => {
  it('doubles the delay from min up to max, and starts over after reset()', async () => {
    const waits: number[] = []
    const backoff = new Backoff({ minMs: 50, maxMs: 300, pause: async (ms) => { waits.push(ms) } })
    for (let i = 0; i < 5; i++) await backoff.wait()
    assert.deepEqual(waits, [50, 100, 200, 300, 300])
    assert.equal(backoff.delayMs, 300)
    backoff.reset()
    assert.equal(backoff.delayMs, 50)
    assert.deepEqual([backoff.next(), backoff.next()], [50, 100])
  })

  it('passes the signal to the wait and skips the wait when already aborted', async () => {
    const signals: Array<AbortSignal | undefined> = []
    const backoff = new Backoff({ minMs: 10, maxMs: 40, pause: async (_ms, signal) => { signals.push(signal) } })
    const ac = new AbortController()
    await backoff.wait(ac.signal)
    assert.deepEqual(signals, [ac.signal])
    ac.abort()
    await backoff.wait(ac.signal)
    assert.equal(signals.length, 1)
    // The skipped wait still counts as a step.
    assert.equal(backoff.delayMs, 40)
  })

  it('ends a wait promptly when the signal aborts, without throwing', async () => {
    const backoff = new Backoff({ minMs: 60_000, maxMs: 60_000 })
    const ac = new AbortController()
    const waiting = backoff.wait(ac.signal)
    assert.equal(await settled(waiting), false)
    ac.abort(new Error('stop'))
    assert.equal(await settled(waiting), true)
    await waiting
  })
})

describe('pause', () => {
  it('ends promptly when the signal aborts, and rejects for nothing', async () => {
    const ac = new AbortController()
    const waiting = pause(60_000, ac.signal)
    assert.equal(await settled(waiting), false)
    ac.abort(new Error('stop'))
    assert.equal(await settled(waiting), true)
    assert.equal(await settled(pause(60_000, AbortSignal.abort())), true)
  })

  it('resolves (to nothing) after the delay without a signal', async () => {
    assert.equal(await pause(1, undefined, { ref: false }), undefined)
  })
})
