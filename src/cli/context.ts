import type { Logger } from '../log/index.ts'

// Shared by run.ts and the command modules it loads; kept apart from run.ts so the commands do not import back
// from their own dispatcher (no import cycle).

/** Exit codes: 0 success, 1 runtime failure, 2 bad command line. */
export const ExitCode = { ok: 0, failure: 1, usage: 2 } as const

/** What a command runs with; `Config` is its typed configuration from spec.ts (e.g. RegistryConfig). */
export interface CommandContext<Config> {
  config: Config
  logger: Logger
  env: Readonly<Record<string, string | undefined>>
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal
}
