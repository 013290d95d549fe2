import { chmod, mkdir, readdir, readFile, readlink, stat, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { TomlError } from 'smol-toml'
import type { Logger } from '../log/index.ts'
import { basicAuthHeaderValue } from './auth.ts'
import type { BasicAuth } from './auth.ts'
import { InvalidHostsFileError } from './errors.ts'
import type { RegistryTls } from './tls.ts'
import {
  backupConfiguration, backupDirName, clearConfiguration, copyTree, directoryExists, fileMode, recoverInterrupted,
  restoreConfiguration, writeFileAtomic,
} from './fs.ts'
import { parseExistingHosts, renderHostsToml, serverForRegistry } from './toml.ts'
import type { ExistingHosts, MirrorCapability } from './toml.ts'
import { parseMirroredRegistries, parseMirrorTargets } from './url.ts'
import type { RegistryUrl } from './url.ts'

// containerd mirror configuration (`configuration` and `cleanup` subcommands): one `<configPath>/<registry host>/hosts.toml`
// per mirrored registry, pointing containerd at this node's Spegel first, with the user's original configuration kept
// in `<configPath>/_backup` until cleanup puts it back.
// https://github.com/containerd/containerd/blob/main/docs/hosts.md
//
// Output is byte-identical to Spegel's for Spegel's own cases. Where Spegel loses or risks user configuration we do not:
// - prepend keeps every key of every existing host, also hosts defined without their own `[host."…"]` header, and the
//   top-level settings for the upstream (`ca`, `client`, `skip_verify`, `[header]`…); only `server` is replaced;
// - a registry directory of the user's that we do not write is not lost: containerd reads it instead of `_default`,
//   so with `_default` mirrored it gets our targets first and all of its own configuration after (its `server` too),
//   and otherwise it is put back as it was (Spegel moves it to `_backup`, and its CA or mirrors go with it);
// - an existing host with the same URL as one of our targets is left out (a duplicate table is invalid TOML);
// - files next to an existing hosts.toml are copied even when it has no host tables, with their modes, symlinks kept;
// - everything is validated and parsed before anything is deleted, files are written atomically, and the backup and
//   restore survive a crash at any point (see fs.ts);
// - no mirror target at all is an error (containerd 1.6 ignores a hosts.toml without a `[host]` table).

export { issueServingCertificate, peerTlsOptions, readRegistryTls, RegistryTlsError, registryTlsFiles } from './tls.ts'
export type { RegistryTls } from './tls.ts'
export { basicAuthChecker, basicAuthFromEnv, basicAuthHeaderValue, defaultBasicAuthDir, readBasicAuth } from './auth.ts'
export type { BasicAuth } from './auth.ts'
export { BackupConflictError, InvalidHostsFileError, InvalidRegistryUrlError, MirrorTargetsRequiredError } from './errors.ts'
export { backupDirName } from './fs.ts'
export { readUpstreamAccess } from './upstream-access.ts'
export type { UpstreamAccess } from './upstream-access.ts'
export { parseExistingHosts, renderHostsToml, renderMirrorHostBlocks, serverForRegistry } from './toml.ts'
export type { ExistingHost, ExistingHosts, MirrorCapability, MirrorHostsOptions } from './toml.ts'
export {
  defaultHostDirectory, encapsulateIPv6Host, parseMirroredRegistries, parseMirrorTargets, parseRegistryUrl,
  wildcardRegistries,
} from './url.ts'
export type { RegistryUrl } from './url.ts'

/** The names of the registry TLS files copied next to each hosts.toml (see WriteMirrorConfigurationOptions.tls). */
export const clientTlsFiles = { ca: 'spegel-ca.crt', cert: 'spegel-client.crt', key: 'spegel-client.key' } as const

/** Default `--containerd-registry-config-path`. */
export const defaultRegistryConfigPath = '/etc/containerd/certs.d'
/** Mode of written hosts.toml files unless the backed-up original had another (e.g. 0600 to protect credentials). */
export const hostsFileMode = 0o644

export interface WriteMirrorConfigurationOptions {
  /** containerd's `config_path`, e.g. `/etc/containerd/certs.d`; created (0755) if missing. */
  configPath: string
  /** `--mirrored-registries`; empty ⇒ every registry (`_default`). */
  mirroredRegistries: readonly string[]
  /** `--mirror-targets`; at least one. */
  mirrorTargets: readonly string[]
  /** Adds the `resolve` capability (tags resolved through the mirror). */
  resolveTags: boolean
  /** Keep the user's existing host entries (after ours) and the files next to them. */
  prependExisting: boolean
  /** Written as an `Authorization` header for every mirror target. */
  basicAuth?: BasicAuth
  /**
   * `--registry-cert-dir`: its CA, certificate and key are copied into each registry's directory (`spegel-ca.crt`,
   * `spegel-client.crt`, `spegel-client.key`, the key readable by root only) and named in every `https://` mirror
   * target's entry, so containerd verifies the mirror and presents the client certificate it asks for.
   */
  tls?: RegistryTls
  logger?: Pick<Logger, 'info' | 'warn'>
  signal?: AbortSignal
}

export interface WrittenHostsFile {
  registry: RegistryUrl
  path: string
}

interface PlannedHostsFile {
  registry: RegistryUrl
  directory: string
  content: string
  mode: number
  /** Files written next to hosts.toml (before it): name → bytes and mode. */
  extra: Array<{ name: string, bytes: Buffer, mode: number }>
  /** The backed-up directory whose other files are copied along, when prepending. */
  copyFrom?: string
}

/** A backed-up registry directory that is put back as it was (hosts.toml included), or a symlink to one. */
interface KeptDirectory {
  name: string
  from: string
  /** The link's target, as written, for a symlink. */
  link?: string
}

/**
 * Installs the mirror configuration: validates the URLs, backs up the existing configuration into `_backup` (once:
 * on a re-run the existing backup is kept and what is outside it is our previous output), replaces everything outside
 * `_backup` and writes one hosts.toml per mirrored registry. Every file is written atomically. All inputs are validated
 * and all existing files parsed before anything outside `_backup` is deleted.
 */
export async function writeMirrorConfiguration (options: WriteMirrorConfigurationOptions): Promise<WrittenHostsFile[]> {
  const { configPath, logger, signal } = options
  const registries = parseMirroredRegistries(options.mirroredRegistries)
  const targets = parseMirrorTargets(options.mirrorTargets)
  const capabilities: MirrorCapability[] = options.resolveTags ? ['pull', 'resolve'] : ['pull']
  const authorization = options.basicAuth === undefined ? undefined : basicAuthHeaderValue(options.basicAuth)
  const tlsFiles = options.tls === undefined ? undefined : clientTlsFiles
  if (options.tls !== undefined && !targets.some((t) => t.scheme === 'https')) {
    logger?.warn({ mirrorTargets: options.mirrorTargets }, '--registry-cert-dir is set but no mirror target is https://: containerd will not reach a registry that serves TLS')
  }

  signal?.throwIfAborted()
  await mkdir(configPath, { recursive: true, mode: 0o755 })
  await recoverInterrupted(configPath, logger)
  signal?.throwIfAborted()
  await backupConfiguration(configPath, logger)

  const planned: PlannedHostsFile[] = []
  /** One registry's hosts.toml: ours first, then `existing` (already without our targets); `server` as renderHostsToml takes it. */
  const plan = async (registry: RegistryUrl, existing: ExistingHosts | undefined, copyFrom: string | undefined, server?: string | null): Promise<void> => {
    planned.push({
      registry,
      directory: join(configPath, registry.host),
      content: renderHostsToml({ registry, ...(server !== undefined ? { server } : {}), mirrorTargets: targets, capabilities, authorization, ...(tlsFiles !== undefined ? { tls: tlsFiles } : {}) }, existing),
      mode: (await fileMode(join(configPath, backupDirName, registry.host, 'hosts.toml'))) ?? hostsFileMode,
      copyFrom,
      extra: tlsExtra(options.tls),
    })
  }
  for (const registry of registries) {
    signal?.throwIfAborted()
    const backupHostDir = join(configPath, backupDirName, registry.host)
    const backupHostsFile = join(backupHostDir, 'hosts.toml')
    let existing: ExistingHosts | undefined
    let copyFrom: string | undefined
    if (options.prependExisting) {
      existing = await readExistingHosts(backupHostsFile, signal)
      if (existing !== undefined) {
        existing = dropDuplicateHosts(existing, targets, registry, logger)
        logger?.info({ registry: registry.href || registry.host }, 'prepending to existing containerd mirror configuration')
      }
      if (await directoryExists(backupHostDir)) {
        copyFrom = backupHostDir
      }
    }
    await plan(registry, existing, copyFrom)
  }

  // Directories of registries we do not write (the user's, e.g. Talos `machine.registries`). containerd reads a
  // registry's own directory instead of `_default`, never both: moved away, its settings (a private CA, client
  // certificates, a pull-through cache) would be lost to containerd while Spegel runs (Spegel clears them; Talos
  // #10647). With `_default` mirrored, the registry gets our targets first and its whole existing file after them,
  // its own `server` included, so it is mirrored like every other registry; otherwise it is put back as it was.
  const kept: KeptDirectory[] = []
  const wildcard = registries.some((r) => r.wildcard)
  const ours = new Set(registries.map((r) => r.host))
  for (const { name, link } of await registryDirectories(join(configPath, backupDirName))) {
    if (ours.has(name)) continue
    signal?.throwIfAborted()
    const from = join(configPath, backupDirName, name)
    if (link !== undefined) {
      // Another name for a directory (index.docker.io -> docker.io): it names that directory again once put back.
      kept.push({ name, from, link })
      continue
    }
    const hostsFile = join(from, 'hosts.toml')
    let existing: ExistingHosts | undefined
    try {
      existing = wildcard ? await readExistingHosts(hostsFile, signal) : undefined
    } catch (err) {
      if (!(err instanceof InvalidHostsFileError)) throw err
      // Not ours to fix: containerd gets it back as it was, and says what it makes of it.
      logger?.warn({ registry: name, err }, 'the hosts.toml of a registry with its own directory is not valid TOML: kept as it was, not mirrored')
    }
    if (existing === undefined) {
      kept.push({ name, from })
      continue
    }
    const registry: RegistryUrl = { wildcard: false, scheme: '', host: name, href: '' }
    logger?.info({ registry: name }, 'prepending to the existing containerd configuration of a registry with its own directory')
    await plan(registry, dropDuplicateHosts(existing, targets, registry, logger), from, existing.server ?? null)
  }

  signal?.throwIfAborted()
  await clearConfiguration(configPath)
  for (const dir of kept) {
    if (dir.link !== undefined) {
      await symlink(dir.link, join(configPath, dir.name))
      continue
    }
    await copyTree(dir.from, join(configPath, dir.name), new Set())
    await chmod(join(configPath, dir.name), (await stat(dir.from)).mode & 0o7777)
    logger?.info({ registry: dir.name, path: join(configPath, dir.name) }, 'kept the containerd configuration of a registry that is not mirrored')
  }
  const written: WrittenHostsFile[] = []
  for (const file of planned) {
    await mkdir(file.directory, { recursive: true, mode: 0o755 })
    if (file.copyFrom !== undefined) {
      // Certificates and keys referenced by the kept entries; copied first so hosts.toml never points at a missing file.
      await copyTree(file.copyFrom, file.directory, new Set(['hosts.toml']))
    }
    for (const extra of file.extra) await writeFileAtomic(join(file.directory, extra.name), extra.bytes, extra.mode)
    const path = join(file.directory, 'hosts.toml')
    await writeFileAtomic(path, file.content, file.mode)
    logger?.info({ registry: file.registry.href || file.registry.host, path }, 'added containerd mirror configuration')
    written.push({ registry: file.registry, path })
  }
  return written
}

/** The registry's TLS files written next to each hosts.toml (see WriteMirrorConfigurationOptions.tls). */
function tlsExtra (tls: RegistryTls | undefined): PlannedHostsFile['extra'] {
  if (tls === undefined) return []
  return [
    { name: clientTlsFiles.ca, bytes: tls.ca, mode: 0o644 },
    { name: clientTlsFiles.cert, bytes: tls.cert, mode: 0o644 },
    { name: clientTlsFiles.key, bytes: tls.key, mode: 0o600 },
  ]
}

/** The directories in `dir`, and the symlinks to directories (with their targets): what containerd takes for registry hosts. */
async function registryDirectories (dir: string): Promise<Array<{ name: string, link?: string }>> {
  const found: Array<{ name: string, link?: string }> = []
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (entry.isDirectory()) found.push({ name: entry.name })
    else if (entry.isSymbolicLink() && await directoryExists(join(dir, entry.name))) found.push({ name: entry.name, link: await readlink(join(dir, entry.name)) })
  }
  return found
}

async function readExistingHosts (path: string, signal: AbortSignal | undefined): Promise<ExistingHosts | undefined> {
  let text: string
  try {
    text = await readFile(path, { encoding: 'utf8', signal })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return undefined
    }
    throw error
  }
  try {
    return parseExistingHosts(text)
  } catch (error) {
    if (error instanceof TomlError) {
      throw new InvalidHostsFileError(path, { cause: error })
    }
    throw error
  }
}

/**
 * Leaves out existing hosts that are also our targets: TOML forbids defining a table twice, and containerd would reject
 * the whole file.
 */
function dropDuplicateHosts (existing: ExistingHosts, targets: readonly RegistryUrl[], registry: RegistryUrl, logger: Pick<Logger, 'info' | 'warn'> | undefined): ExistingHosts {
  const ours = new Set(targets.map((target) => target.href))
  const hosts = existing.hosts.filter((host) => {
    if (ours.has(host.key)) {
      logger?.warn({ registry: registry.href || registry.host, host: host.key }, 'existing host entry replaced by mirror target')
      return false
    }
    return true
  })
  const server = serverForRegistry(registry)
  // (A registry directory of the user's, written because `_default` is mirrored, keeps its own server: no href here.)
  if (existing.server !== undefined && server !== undefined && registry.href !== '' && existing.server !== server) {
    logger?.warn({ registry: registry.href || registry.host, existing: existing.server, server }, 'existing server setting replaced')
  }
  return { ...existing, hosts }
}

export interface CleanupMirrorConfigurationOptions {
  configPath: string
  logger?: Pick<Logger, 'info' | 'warn'>
  signal?: AbortSignal
}

/**
 * Removes our configuration and restores the backup byte for byte (entries are renamed back, not copied). Without a
 * backup nothing is changed: the mirror was never configured or cleanup already ran. Returns whether it restored.
 */
export async function cleanupMirrorConfiguration (options: CleanupMirrorConfigurationOptions): Promise<boolean> {
  options.signal?.throwIfAborted()
  const restored = await restoreConfiguration(options.configPath, options.logger)
  if (!restored) {
    options.logger?.info({ path: options.configPath }, 'skipping cleanup because backup directory does not exist')
  }
  return restored
}
