import { pino, type Logger } from 'pino'

export type { Logger } from 'pino'

/** Spegel's level names (`--log-level`) mapped to pino's. */
const levels: Readonly<Record<string, string>> = { DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' }

/** JSON logs on stderr, one object per line with `time`, `level` (upper case, as Spegel's slog), `msg`. */
export function createLogger (level = 'INFO', destination: NodeJS.WritableStream | number = 2): Logger {
  return pino({
    level: levels[level.toUpperCase()] ?? 'info',
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label.toUpperCase() }) },
    errorKey: 'err',
  }, typeof destination === 'number' ? pino.destination({ fd: destination, sync: false }) : destination)
}
