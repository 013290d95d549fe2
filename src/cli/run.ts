import { HelpRequested, parseCommandLine, UsageError } from './args.ts'
import { ExitCode, type CommandContext } from './context.ts'
import { commands, globalFlags, type VersionConfig } from './spec.ts'
import { createLogger } from '../log/index.ts'
import { versionInfo } from '../version.ts'

type Parsed = ReturnType<typeof parseCommandLine<typeof commands, typeof globalFlags>>

/** Runs the parsed command with its typed config; a command's module is loaded only when it runs. */
async function dispatch (parsed: Parsed, ctx: Omit<CommandContext<unknown>, 'config'>): Promise<number> {
  switch (parsed.command) {
    case 'configuration': return await (await import('./configuration.ts')).configurationCommand({ ...ctx, config: parsed.config })
    case 'registry': return await (await import('./registry.ts')).registryCommand({ ...ctx, config: parsed.config })
    case 'cleanup': return await (await import('./cleanup.ts')).cleanupCommand({ ...ctx, config: parsed.config })
    case 'cleanup-wait': return await (await import('./cleanup.ts')).cleanupWaitCommand({ ...ctx, config: parsed.config })
    case 'doctor': return await (await import('./doctor.ts')).doctorCommand({ ...ctx, config: parsed.config })
    case 'version': return await versionCommand({ ...ctx, config: parsed.config })
  }
}

/** Parses argv, runs the command and returns the process exit code. Errors end as one line on stderr. */
export async function runCli (argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Promise<number> {
  let parsed: Parsed
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
  const logger = createLogger(parsed.config.logLevel)
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
    return await dispatch(parsed, { logger, env, signal: ac.signal })
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

async function versionCommand (ctx: CommandContext<VersionConfig>): Promise<number> {
  const info = versionInfo()
  if (ctx.config.format === 'json') process.stdout.write(JSON.stringify(info) + '\n')
  else process.stdout.write(`spegel version ${info.build.version} ${info.build.commit}\n`)
  return ExitCode.ok
}
