import { pino } from 'pino'

/**
 * The logger every part takes: fields first, then the message, as the pino logger of createLogger writes them (it
 * satisfies this interface; only this module imports pino). A part that logs at a few levels asks for
 * `Pick<Logger, …>`, so a test can hand it a two-method fake.
 */
export interface Logger {
  debug (obj: object, msg: string): void
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
  /** A logger that adds `bindings` (`{ component: 'router' }`) to every line. */
  child (bindings: Record<string, unknown>): Logger
}

/** Spegel's level names (`--log-level`) mapped to pino's. */
const levels: Readonly<Record<string, string>> = { DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' }

/** JSON logs on stderr, one object per line with `time`, `level` (upper case, as Spegel's slog), `msg`. */
export function createLogger (level = 'INFO', destination: NodeJS.WritableStream | number = 2): pino.Logger {
  return pino({
    level: levels[level.toUpperCase()] ?? 'info',
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label.toUpperCase() }) },
    errorKey: 'err',
    // pino's `type` is the error's constructor name, which the minified bundle does not keep (scripts/bundle.ts
    // drops esbuild's keepNames: it cost a property definition on every closure created); every error class here
    // and in libp2p sets `name`, so `type` is that.
    serializers: { err: serializeError },
  }, typeof destination === 'number' ? pino.destination({ fd: destination, sync: false }) : destination)
}

/** pino's error serializer (message, stack, cause, own fields), with `type` taken from the error's `name`. */
function serializeError (err: unknown): unknown {
  const out = pino.stdSerializers.err(err as Error) as unknown
  if (err instanceof Error && typeof err.name === 'string' && out !== null && typeof out === 'object') (out as { type?: string }).type = err.name
  return out
}
