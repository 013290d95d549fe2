// Running the doctor inside `spegel registry`: at startup, periodically, and a few seconds after containerd reports an
// image created or updated, with findings in the logs, the spegel_doctor_findings metric (set by Doctor.run) and the
// `/readyz?verbose` text (readyzDetail, the registry app's readinessDetail). Findings never make the daemon unready: a
// misconfigured node still serves its peers, and failing readiness would hide it instead of explaining it.
//
// Why image events: a node whose containerd discards unpacked layers (Talos's default, or a patch that never reached
// containerd) loses the layers of every image it pulls a moment after the pull. A check at start finds nothing (no
// image yet) and the next one comes ten minutes later; looking again just after the first pulls names the cause while
// the user is still watching the rollout.
import type { Logger } from '../log/index.ts'
import type { StoreChange, StoreOptions } from '../store/types.ts'
import type { DoctorReport } from './types.ts'
import { pause } from '../util/backoff.ts'

/** What the loop needs of a Doctor. */
export interface DoctorRunner {
  run (options?: StoreOptions): Promise<DoctorReport>
}

export interface DoctorLoopOptions {
  /** Time between runs when nothing happens (default 10 min). */
  intervalMs?: number
  /** The store's changes (ContentStore.changes): an image created or updated brings the next run forward. */
  changes?: (signal: AbortSignal) => AsyncIterable<StoreChange>
  /** How long after the last image change the run comes, so a burst of pulls is looked at once (default 5 s). */
  afterChangeMs?: number
  /** Least time between two runs brought forward by changes (default 30 s): a rollout does not run it non-stop. */
  minChangeGapMs?: number
}

/** Runs the doctor now, every intervalMs, and soon after image changes, until the signal aborts. Never throws. */
export async function runDoctorLoop (doctor: DoctorRunner, logger: Logger, signal: AbortSignal, options: DoctorLoopOptions = {}): Promise<void> {
  const intervalMs = options.intervalMs ?? 10 * 60_000
  const afterChangeMs = options.afterChangeMs ?? 5_000
  const minChangeGapMs = options.minChangeGapMs ?? 30_000
  let changedAt: number | undefined
  let wake: (() => void) | undefined
  const watching = options.changes !== undefined ? watchImages(options.changes, logger, signal, () => { changedAt = performance.now(); wake?.() }) : Promise.resolve()
  let previous = ''
  // When the last run brought forward by a change started (the gap is between those; the start and the periodic runs
  // do not delay a change's).
  let lastChangeRun = -Infinity
  let byChange = false
  while (!signal.aborted) {
    const lastRun = performance.now()
    if (byChange) lastChangeRun = lastRun
    changedAt = undefined
    try {
      const report = await doctor.run({ signal })
      // Logged when the outcome changes, not every run.
      const key = report.findings.map((f) => `${f.check}:${f.problem}`).join('\n')
      if (key !== previous || previous === '') {
        if (report.findings.length === 0) logger.info({ checks: report.results.map((r) => `${r.check}=${r.status}`) }, 'doctor: no findings')
        for (const f of report.findings) logger.warn({ check: f.check, impact: f.impact, fix: f.fix }, `doctor: ${f.problem}`)
      }
      previous = key === '' ? 'clean' : key
    } catch (err) {
      if (signal.aborted) break
      logger.warn({ err }, 'doctor run failed')
    }
    // Until the interval is up, or an image changed (then afterChangeMs after the last change, and minChangeGapMs
    // after the last run a change brought forward at the earliest).
    while (!signal.aborted) {
      const now = performance.now()
      const periodic = lastRun + intervalMs
      const due = changedAt === undefined ? periodic : Math.min(periodic, Math.max(changedAt + afterChangeMs, lastChangeRun + minChangeGapMs))
      byChange = due < periodic
      if (now >= due) break
      const woken = new AbortController()
      wake = () => { woken.abort() }
      await pause(due - now, AbortSignal.any([signal, woken.signal]), { ref: false })
      wake = undefined
    }
  }
  await watching
}

/** Calls `onChange` for every image created, updated or deleted (not per blob), resubscribing when the feed breaks. */
async function watchImages (changes: (signal: AbortSignal) => AsyncIterable<StoreChange>, logger: Logger, signal: AbortSignal, onChange: () => void): Promise<void> {
  while (!signal.aborted) {
    try {
      for await (const change of changes(signal)) {
        if (change.created === undefined) onChange()
      }
    } catch (err) {
      if (signal.aborted) return
      logger.debug({ err }, 'doctor: store changes feed ended; resubscribing')
    }
    await pause(1_000, signal, { ref: false })
  }
}

/** The doctor's part of `/readyz?verbose`. */
export function readyzDetail (report: DoctorReport | undefined): string {
  if (report === undefined) return '[?]doctor: not run yet'
  const lines = report.results.map((r) => `[${r.status === 'finding' ? '-' : '+'}]doctor ${r.check}: ${r.status === 'ok' ? 'ok' : r.status === 'skipped' ? `skipped (${r.summary})` : r.summary}`)
  for (const f of report.findings) lines.push(`    ${f.check}: ${f.problem} Fix: ${f.fix.split('\n')[0] ?? ''} (run spegel doctor for the full fix)`)
  return lines.join('\n')
}
