import { HelpRequested, parseCommandLine, UsageError } from './args.ts'
import { ExitCode, type CommandContext } from './context.ts'
import { commands, globalFlags } from './spec.ts'
import { createLogger } from '../log/index.ts'
import { versionInfo } from '../version.ts'

type Handler = (ctx: CommandContext) => Promise<number>

const handlers: Record<string, () => Promise<Handler>> = {
  configuration: async () => (await import('./configuration.ts')).configurationCommand,
  registry: async () => (await import('./registry.ts')).registryCommand,
  cleanup: async () => (await import('./cleanup.ts')).cleanupCommand,
  'cleanup-wait': async () => (await import('./cleanup.ts')).cleanupWaitCommand,
  doctor: async () => (await import('./doctor.ts')).doctorCommand,
  version: async () => versionCommand,
}

/** Parses argv, runs the command and returns the process exit code. Errors end as one line on stderr. */
export async function runCli (argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Promise<number> {
  let parsed
  try {
    parsed = parseCommandLine(argv, env, commands, globalFlags)
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(err.message + '\n')
      return ExitCode.ok
    }
    if (err instanceof UsageError) {
      process.stderr.write(`spegel: ${err.message}\n`)
      return ExitCode.usage
    }
    throw err
  }
  const logger = createLogger(String(parsed.values.get('log-level') ?? 'INFO'))
  const ac = new AbortController()
  let signals = 0
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++
    if (signals === 1) {
      logger.info({ signal: sig }, 'shutting down')
      ac.abort(new Error(`received ${sig}`))
    } else {
      logger.warn({ signal: sig }, 'second signal, exiting now')
      process.exit(ExitCode.failure)
    }
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    const handler = await (handlers[parsed.command] as () => Promise<Handler>)()
    return await handler({ values: parsed.values, logger, env, signal: ac.signal })
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    logger.error({ err }, message)
    logger.flush()
    process.stderr.write(`spegel ${parsed.command}: ${message.split('\n')[0] ?? ''}\n`)
    return ExitCode.failure
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    logger.flush()
  }
}

async function versionCommand (ctx: CommandContext): Promise<number> {
  const info = versionInfo()
  if (ctx.values.get('format') === 'json') process.stdout.write(JSON.stringify(info) + '\n')
  else process.stdout.write(`spegel version ${info.build.version} ${info.build.commit}\n`)
  return ExitCode.ok
}
