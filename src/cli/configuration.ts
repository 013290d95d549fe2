import { basicAuthFromEnv, readRegistryTls, writeMirrorConfiguration } from '../hosts/index.ts'
import { ExitCode, type CommandContext } from './context.ts'
import type { ConfigurationConfig } from './spec.ts'

/** `spegel configuration`: write containerd's hosts.toml mirror entries (the DaemonSet's init container). */
export async function configurationCommand (ctx: CommandContext<ConfigurationConfig>): Promise<number> {
  const { config, logger, signal } = ctx
  const basicAuth = await basicAuthFromEnv(ctx.env)
  const tls = await readRegistryTls(config.registryCertDir)
  await writeMirrorConfiguration({
    configPath: config.containerdRegistryConfigPath,
    mirroredRegistries: config.mirroredRegistries,
    mirrorTargets: config.mirrorTargets,
    resolveTags: config.resolveTags,
    prependExisting: config.prependExisting,
    ...(basicAuth !== undefined ? { basicAuth } : {}),
    ...(tls !== undefined ? { tls } : {}),
    logger,
    signal,
  })
  return ExitCode.ok
}
