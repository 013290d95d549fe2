import { readBasicAuth, writeMirrorConfiguration } from '../hosts/index.ts'
import { basicAuthDir } from './registry.ts'
import { ExitCode, bool, list, str, type CommandContext } from './context.ts'

/** `spegel configuration`: write containerd's hosts.toml mirror entries (the DaemonSet's init container). */
export async function configurationCommand (ctx: CommandContext): Promise<number> {
  const { values, logger, signal } = ctx
  const basicAuth = await readBasicAuth(ctx.env.SPEGEL_BASIC_AUTH_DIR ?? basicAuthDir)
  await writeMirrorConfiguration({
    configPath: str(values, 'containerd-registry-config-path'),
    mirroredRegistries: list(values, 'mirrored-registries'),
    mirrorTargets: list(values, 'mirror-targets'),
    resolveTags: bool(values, 'resolve-tags'),
    prependExisting: bool(values, 'prepend-existing'),
    ...(basicAuth !== undefined ? { basicAuth } : {}),
    logger,
    signal,
  })
  return ExitCode.ok
}
