// Running the doctor inside `spegel registry`: at startup and then periodically, with findings in the logs, the
// spegel_doctor_findings metric (set by Doctor.run) and the `/readyz?verbose` text (readyzDetail, the registry app's
// readinessDetail). Findings never make the daemon unready: a misconfigured node still serves its peers, and failing
// readiness would hide it instead of explaining it.
import type { Logger } from '../log/index.ts'
import type { StoreOptions } from '../store/types.ts'
import type { DoctorReport } from './types.ts'
import { pause } from '../util/backoff.ts'

/** What the loop needs of a Doctor. */
export interface DoctorRunner {
  run (options?: StoreOptions): Promise<DoctorReport>
}

/** Runs the doctor now and every intervalMs until the signal aborts. Never throws. */
export async function runDoctorLoop (doctor: DoctorRunner, logger: Logger, signal: AbortSignal, intervalMs = 10 * 60_000): Promise<void> {
  let previous = ''
  while (!signal.aborted) {
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
      if (signal.aborted) return
      logger.warn({ err }, 'doctor run failed')
    }
    await pause(intervalMs, signal, { ref: false })
  }
}

/** The doctor's part of `/readyz?verbose`. */
export function readyzDetail (report: DoctorReport | undefined): string {
  if (report === undefined) return '[?]doctor: not run yet'
  const lines = report.results.map((r) => `[${r.status === 'finding' ? '-' : '+'}]doctor ${r.check}: ${r.status === 'ok' ? 'ok' : r.status === 'skipped' ? `skipped (${r.summary})` : r.summary}`)
  for (const f of report.findings) lines.push(`    ${f.check}: ${f.problem} Fix: ${f.fix.split('\n')[0] ?? ''} (run spegel doctor for the full fix)`)
  return lines.join('\n')
}
