import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { runDoctorLoop } from '../../../src/doctor/daemon.ts'
import type { DoctorReport } from '../../../src/doctor/types.ts'
import type { StoreChange } from '../../../src/store/types.ts'

const quiet = pino({ level: 'silent' })

/** A doctor that records when it ran (ms since the test's start). */
function countingDoctor (): { run: () => Promise<DoctorReport>, runs: number[] } {
  const started = performance.now()
  const runs: number[] = []
  return {
    runs,
    run: async () => {
      runs.push(performance.now() - started)
      return { results: [], findings: [] } as unknown as DoctorReport
    },
  }
}

/** A changes feed the test pushes into; every subscription sees what is pushed after it started. */
function feed (): { changes: (signal: AbortSignal) => AsyncIterable<StoreChange>, push: (c: StoreChange) => void } {
  const listeners = new Set<(c: StoreChange) => void>()
  return {
    push: (c) => { for (const l of listeners) l(c) },
    changes: (signal) => ({
      async * [Symbol.asyncIterator] () {
        const queue: StoreChange[] = []
        let notify: (() => void) | undefined
        const listener = (c: StoreChange): void => { queue.push(c); notify?.() }
        listeners.add(listener)
        try {
          while (!signal.aborted) {
            const next = queue.shift()
            if (next !== undefined) {
              yield next
              continue
            }
            await new Promise<void>((resolve) => {
              notify = resolve
              signal.addEventListener('abort', () => { resolve() }, { once: true })
            })
          }
        } finally {
          listeners.delete(listener)
        }
      },
    }),
  }
}

describe('the doctor loop in the daemon', () => {
  it('runs at start, then soon after an image changes (not at the next interval), once for a burst of changes', async () => {
    const doctor = countingDoctor()
    const changes = feed()
    const stop = new AbortController()
    const loop = runDoctorLoop(doctor, quiet, stop.signal, { intervalMs: 60_000, changes: changes.changes, afterChangeMs: 150, minChangeGapMs: 0 })
    try {
      await sleep(100)
      assert.equal(doctor.runs.length, 1, 'one run at start')
      // Blobs landing (containerd 2.x reports each) are not a reason to look again.
      for (let i = 0; i < 5; i++) changes.push({ contentDeleted: false, created: `sha256:${i}` })
      await sleep(300)
      assert.equal(doctor.runs.length, 1, 'content-created events do not bring a run forward')
      // A pull completes: image created, then updated, 50 ms apart; one run 150 ms after the last.
      const changedAt = performance.now()
      changes.push({ contentDeleted: false })
      await sleep(50)
      changes.push({ contentDeleted: false })
      await sleep(400)
      assert.equal(doctor.runs.length, 2, `one run for the burst (runs at ${doctor.runs.map(Math.round).join(', ')} ms)`)
      assert.ok(performance.now() - changedAt >= 200)
    } finally {
      stop.abort()
      await loop
    }
  })

  it('never runs more often than the least gap, however many images change', async () => {
    const doctor = countingDoctor()
    const changes = feed()
    const stop = new AbortController()
    const loop = runDoctorLoop(doctor, quiet, stop.signal, { intervalMs: 60_000, changes: changes.changes, afterChangeMs: 10, minChangeGapMs: 400 })
    try {
      await sleep(50)
      const timer = setInterval(() => { changes.push({ contentDeleted: true }) }, 20)
      await sleep(1_000)
      clearInterval(timer)
      // Start; the first change's run at once (the start run does not delay it); then at most one per 400 ms.
      assert.ok(doctor.runs.length >= 3 && doctor.runs.length <= 5, `runs at ${doctor.runs.map(Math.round).join(', ')} ms`)
      assert.ok(doctor.runs[1]! < 200, `the first change's run came ${Math.round(doctor.runs[1]!)} ms after start`)
      for (let i = 2; i < doctor.runs.length; i++) assert.ok(doctor.runs[i]! - doctor.runs[i - 1]! >= 390, `gap ${doctor.runs[i]! - doctor.runs[i - 1]!} ms`)
    } finally {
      stop.abort()
      await loop
    }
  })

  it('subscribes again when the feed breaks (containerd restarted), and stops with its signal', async () => {
    const doctor = countingDoctor()
    let subscriptions = 0
    const stop = new AbortController()
    const loop = runDoctorLoop(doctor, quiet, stop.signal, {
      intervalMs: 60_000,
      afterChangeMs: 10,
      minChangeGapMs: 0,
      changes: () => ({
        async * [Symbol.asyncIterator] () {
          subscriptions++
          yield { contentDeleted: false }
          throw new Error('containerd went away')
        },
      }),
    })
    await sleep(1_500)
    stop.abort()
    await loop
    assert.ok(subscriptions >= 2, `${subscriptions} subscriptions`)
    assert.ok(doctor.runs.length >= 2, 'each image change seen brought a run')
  })
})
