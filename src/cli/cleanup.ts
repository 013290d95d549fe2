import { cleanupWait, runCleanup } from '../cleanup/index.ts'
import { ExitCode, type CommandContext } from './context.ts'
import type { CleanupConfig, CleanupWaitConfig } from './spec.ts'

/** `spegel cleanup`: restore the backed-up containerd configuration, then report ready until terminated. */
export async function cleanupCommand (ctx: CommandContext<CleanupConfig>): Promise<number> {
  await runCleanup({
    configPath: ctx.config.containerdRegistryConfigPath,
    addr: ctx.config.addr,
    signal: ctx.signal,
    logger: ctx.logger,
  })
  return ExitCode.ok
}

/** `spegel cleanup-wait`: wait until every cleanup pod reports that it has restored its node. */
export async function cleanupWaitCommand (ctx: CommandContext<CleanupWaitConfig>): Promise<number> {
  await cleanupWait({
    probeEndpoint: ctx.config.probeEndpoint,
    threshold: ctx.config.threshold,
    periodMs: ctx.config.periodMs,
    signal: ctx.signal,
    logger: ctx.logger,
  })
  ctx.logger.info({}, 'cleanup completed on every node')
  return ExitCode.ok
}
