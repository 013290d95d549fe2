import type { FlagValue } from './args.ts'
import type { Logger } from '../log/index.ts'

// Shared by run.ts and the command modules it loads; kept apart from run.ts so the commands do not import back
// from their own dispatcher (no import cycle).

/** Exit codes: 0 success, 1 runtime failure, 2 bad command line. */
export const ExitCode = { ok: 0, failure: 1, usage: 2 } as const

export interface CommandContext {
  values: Map<string, FlagValue>
  logger: Logger
  env: Readonly<Record<string, string | undefined>>
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal
}

/** Typed accessors for parsed flag values. */
export function str (values: Map<string, FlagValue>, name: string): string {
  const v = values.get(name)
  return typeof v === 'string' ? v : ''
}
export function list (values: Map<string, FlagValue>, name: string): string[] {
  const v = values.get(name)
  return Array.isArray(v) ? v : []
}
export function num (values: Map<string, FlagValue>, name: string): number {
  const v = values.get(name)
  return typeof v === 'number' ? v : 0
}
export function bool (values: Map<string, FlagValue>, name: string): boolean {
  return values.get(name) === true
}
