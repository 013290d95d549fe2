import { cleanupWait, runCleanup } from '../cleanup/index.ts'
import { ExitCode, num, str, type CommandContext } from './context.ts'

/** `spegel cleanup`: restore the backed-up containerd configuration, then report ready until terminated. */
export async function cleanupCommand (ctx: CommandContext): Promise<number> {
  await runCleanup({
    configPath: str(ctx.values, 'containerd-registry-config-path'),
    addr: str(ctx.values, 'addr'),
    signal: ctx.signal,
    logger: ctx.logger,
  })
  return ExitCode.ok
}

/** `spegel cleanup-wait`: wait until every cleanup pod reports that it has restored its node. */
export async function cleanupWaitCommand (ctx: CommandContext): Promise<number> {
  await cleanupWait({
    probeEndpoint: str(ctx.values, 'probe-endpoint'),
    threshold: num(ctx.values, 'threshold'),
    periodMs: num(ctx.values, 'period'),
    signal: ctx.signal,
    logger: ctx.logger,
  })
  ctx.logger.info({}, 'cleanup completed on every node')
  return ExitCode.ok
}
