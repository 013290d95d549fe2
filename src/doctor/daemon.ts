// Running the doctor inside `spegel registry`: at startup and then periodically, with findings in the logs, the
// spegel_doctor_findings metric (set by Doctor.run) and the `/readyz?verbose` text. Findings never make the daemon
// unready: a misconfigured node still serves its peers, and failing readiness would hide it instead of explaining it.
import type { FastifyInstance } from 'fastify'
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

/**
 * Adds the detail to `/readyz` answers when the query has `verbose` (as Kubernetes components do). The status code and
 * the plain `/readyz` body are the registry's own; only the verbose body gets the extra lines.
 */
export function addReadyzDetail (app: FastifyInstance, detail: () => string): void {
  app.addHook('onSend', async (req, _reply, payload) => {
    if (req.routeOptions.url !== '/readyz' || typeof payload !== 'string') return payload
    const query = (req.raw.url ?? '').split('?')[1] ?? ''
    if (!query.split('&').some((p) => p === 'verbose' || p.startsWith('verbose='))) return payload
    return `${payload}\n${detail()}\n`
  })
}
