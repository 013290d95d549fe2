import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { defaultNamespace } from '../containerd/constants.ts'
import { defaultHostDirectory, parseMirroredRegistries, parseMirrorTargets, type RegistryUrl } from '../hosts/url.ts'
import type { Metrics } from '../metrics/index.ts'
import { isIndexMediaType } from '../oci/mediatypes.ts'
import type { ContentStore, ImageRecord, StoreOptions } from '../store/types.ts'
import { walkImage } from '../store/walk.ts'
import { CriUnavailableError, type CriApi } from './cri.ts'
import { criImageSettings, criTomlSnippet, normalizeDir, splitConfigPath, type CriLayout, type CriImageSettings } from './cri-config.ts'
import { type CheckName, type CheckResult, type DoctorReport, type Finding } from './types.ts'
import { looksLikeTalos, talosApplyHint, talosConfigPath, talosDiscardPatch } from './talos.ts'

export { CriClient, CriUnavailableError } from './cri.ts'
export type { CriApi, CriClientOptions, CriStatus, CriVersion } from './cri.ts'
export { criImageSettings, splitConfigPath } from './cri-config.ts'
export type { CriImageSettings, CriLayout } from './cri-config.ts'
export { talosDiscardPatch } from './talos.ts'

export { checkNames } from './types.ts'
export type { CheckName, CheckResult, DoctorReport, Finding } from './types.ts'

/** What the doctor reads; production passes the containerd clients, tests may pass fakes. */
export interface DoctorComponents {
  store: ContentStore
  /** CRI runtime service on containerd's socket. */
  cri?: CriApi
  /** containerd introspection, to tell the 1.x and 2.x config layouts apart. */
  plugins?: (options?: StoreOptions) => Promise<Array<{ type: string, id: string }>>
  metrics?: Metrics
  /**
   * Requests this node's containerd has sent to the mirror since the daemon started (not peers'): only the daemon
   * knows it, so `spegel doctor` skips the mirror-traffic check.
   */
  mirrorRequests?: () => number
}

export interface DoctorOptions {
  /** Where `spegel configuration` writes hosts.toml (`--containerd-registry-config-path`). */
  registryConfigPath: string
  /** `--mirrored-registries`; empty means every registry (`_default`). */
  mirroredRegistries?: readonly string[]
  /** `--mirror-targets`; the first is this node's mirror. Empty: any mirror host is accepted. */
  mirrorTargets?: readonly string[]
  /** containerd namespace, for the commands printed in fixes. */
  namespace?: string
  /**
   * The daemon does not mount the hosts directory (Spegel's chart does not): when it is absent, skip the hosts.toml
   * check instead of reporting it missing.
   */
  hostsOptional?: boolean
  /**
   * Where the node's root filesystem is mounted when the doctor runs in a debug pod (`kubectl debug node/…` mounts it at
   * /host): hosts.toml files are read below it, while paths in messages and comparisons stay the node's own.
   */
  hostRoot?: string
  /** Force Talos advice on or off; default: detected from the paths. */
  talos?: boolean
  /** Images examined for missing layers (default 500). */
  maxImages?: number
  /** New images (from mirrored registries) pulled without one request to the mirror before it is a finding (default 3). */
  pullsWithoutTraffic?: number
}

/**
 * Finds the node misconfigurations that make a mirror silently useless: containerd not reading the hosts directory
 * the mirror configuration is written to, layers discarded after unpacking (by config, and in fact), and hosts.toml
 * files that do not send pulls to this node's mirror. Never throws for what it finds; each check reports ok, a
 * finding with its fix, or why it was skipped.
 */
export class Doctor {
  private readonly components: DoctorComponents
  private readonly init: DoctorOptions
  private last: DoctorReport | undefined
  /** Digests of the images (from mirrored registries) present at the first run: what was there before the daemon. */
  private baseline: Set<string> | undefined

  constructor (components: DoctorComponents, init: DoctorOptions) {
    this.components = components
    this.init = init
  }

  /** The report of the last completed run. */
  get lastReport (): DoctorReport | undefined {
    return this.last
  }

  async run (options: StoreOptions = {}): Promise<DoctorReport> {
    const { signal } = options
    const results: CheckResult[] = []
    const ns = this.init.namespace ?? defaultNamespace

    // Read once: the reachability check, the missing layers and the traffic check all look at the same list.
    let images: ImageRecord[] = []
    let reachable = true
    try {
      images = await this.components.store.listImages({ signal })
      results.push(ok('containerd', `containerd answers (namespace ${ns})`))
    } catch (err) {
      signal?.throwIfAborted()
      reachable = false
      results.push(finding('containerd', {
        problem: `containerd cannot be reached: ${message(err)}`,
        impact: 'without containerd nothing can be served or advertised, and the other checks cannot run.',
        fix: 'check that containerd runs (systemctl status containerd) and that --containerd-sock points at its socket (default /run/containerd/containerd.sock).',
      }, 'containerd unreachable'))
    }

    let settings: CriImageSettings = {}
    let criError: string | undefined
    let version: string | undefined
    if (reachable && this.components.cri !== undefined) {
      try {
        version = (await this.components.cri.version({ signal })).runtimeVersion
      } catch {}
      try {
        settings = criImageSettings((await this.components.cri.status({ signal })).info)
      } catch (err) {
        signal?.throwIfAborted()
        criError = err instanceof CriUnavailableError ? err.message : `CRI Status failed: ${message(err)}`
      }
    } else if (this.components.cri === undefined) {
      criError = 'no CRI client'
    }
    const layout = reachable ? await this.layout(version, signal) : undefined
    const talos = this.init.talos ?? looksLikeTalos([this.init.registryConfigPath, ...(settings.configPath !== undefined ? splitConfigPath(settings.configPath) : [])])

    if (!reachable) {
      for (const check of ['config-path', 'discard-unpacked-layers', 'missing-layers'] as const) results.push(skipped(check, 'containerd unreachable'))
    } else {
      results.push(this.checkConfigPath(settings, criError, layout ?? 'grpc.v1.cri', talos))
      results.push(this.checkDiscard(settings, criError, layout ?? 'grpc.v1.cri', talos))
      results.push(await this.checkMissingLayers(images, ns, layout ?? 'grpc.v1.cri', talos, signal))
    }
    results.push(await this.checkHosts(settings, talos))
    results.push(reachable ? this.checkTraffic(images, talos) : skipped('mirror-traffic', 'containerd unreachable'))

    const report: DoctorReport = {
      results,
      findings: results.flatMap((r) => r.findings),
      talos,
      ...(version !== undefined ? { containerdVersion: version } : {}),
      ...(layout !== undefined ? { layout } : {}),
      finishedAt: new Date(),
    }
    const metrics = this.components.metrics
    if (metrics !== undefined) for (const r of results) metrics.doctorFindings.set({ check: r.check }, r.findings.length)
    this.last = report
    return report
  }

  private async layout (version: string | undefined, signal: AbortSignal | undefined): Promise<CriLayout> {
    if (this.components.plugins !== undefined) {
      try {
        const plugins = await this.components.plugins({ signal })
        if (plugins.some((p) => p.type === 'io.containerd.cri.v1' && p.id === 'images')) return 'cri.v1.images'
        if (plugins.some((p) => p.type === 'io.containerd.grpc.v1' && p.id === 'cri')) return 'grpc.v1.cri'
      } catch {}
    }
    const major = Number(/^v?(\d+)\./.exec(version ?? '')?.[1] ?? NaN)
    return major >= 2 ? 'cri.v1.images' : 'grpc.v1.cri'
  }

  private checkConfigPath (settings: CriImageSettings, criError: string | undefined, layout: CriLayout, talos: boolean): CheckResult {
    const ours = normalizeDir(this.init.registryConfigPath)
    if (settings.configPath === undefined) {
      return skipped('config-path', criError ?? 'containerd does not report its registry config_path (containerd 2.x); the hosts.toml check still runs')
    }
    const dirs = splitConfigPath(settings.configPath)
    if (dirs.includes(ours)) {
      return ok('config-path', `containerd reads hosts from ${settings.configPath}, which includes ${ours}`)
    }
    const restart = 'then restart containerd (systemctl restart containerd); running pods are not affected.'
    if (dirs.length === 0) {
      return finding('config-path', {
        problem: 'containerd has no registry config_path: it ignores every hosts.toml, including the mirror configuration spegel writes.',
        impact: 'containerd never asks this node\'s mirror; every pull goes to the upstream registry, and nothing says so.',
        fix: talos
          ? `Talos sets config_path to ${talosConfigPath}; set the chart value spegel.containerdRegistryConfigPath=${talosConfigPath}.`
          : `add to containerd's config (/etc/containerd/config.toml):\n${criTomlSnippet(layout, { configPath: ours })}\n${restart}`,
      }, 'config_path unset')
    }
    const first = dirs[0] as string
    return finding('config-path', {
      problem: `containerd reads hosts from ${settings.configPath}, but the mirror configuration is written to ${ours}.`,
      impact: 'containerd never sees the mirror configuration; every pull goes to the upstream registry.',
      fix: `either write the mirror configuration where containerd looks: helm upgrade spegel … --set spegel.containerdRegistryConfigPath=${first}` +
        (dirs.length > 1 ? ` (containerd uses the first directory that has a directory for the registry; ${dirs.join(', ')} are all read)` : '') +
        `\nor point containerd at it:\n${criTomlSnippet(layout, { configPath: [ours, ...dirs].join(':') })}\n${restart}`,
    }, 'config_path does not include the mirror configuration')
  }

  private checkDiscard (settings: CriImageSettings, criError: string | undefined, layout: CriLayout, talos: boolean): CheckResult {
    if (settings.discardUnpackedLayers === undefined) {
      return skipped('discard-unpacked-layers', (criError ?? 'containerd does not report discard_unpacked_layers (containerd 2.x)') + '; the missing-layers check looks at the content itself')
    }
    if (!settings.discardUnpackedLayers) return ok('discard-unpacked-layers', 'containerd keeps layers after unpacking (discard_unpacked_layers = false)')
    return finding('discard-unpacked-layers', {
      problem: 'containerd deletes compressed layers after unpacking them (discard_unpacked_layers = true).',
      impact: 'this node advertises images whose layers it no longer holds; peers that ask for them get 404 and pull from upstream, so the mirror saves nothing.',
      fix: discardFix(layout, talos),
    }, 'layers are discarded after unpacking')
  }

  private async checkMissingLayers (images: readonly ImageRecord[], ns: string, layout: CriLayout, talos: boolean, signal: AbortSignal | undefined): Promise<CheckResult> {
    const { store } = this.components
    const max = this.init.maxImages ?? 500
    const broken: Array<{ name: string, missing: number }> = []
    const seen = new Map<string, number>()
    let examined = 0
    for (const image of images) {
      if (examined >= max) break
      let missing = seen.get(image.digest)
      if (missing === undefined) {
        examined++
        try {
          missing = await missingLayers(store, image.digest, signal)
        } catch (err) {
          signal?.throwIfAborted()
          missing = 0
          void err
        }
        seen.set(image.digest, missing)
      }
      if (missing > 0) broken.push({ name: image.name, missing })
    }
    if (broken.length === 0) return ok('missing-layers', `${examined} image(s) examined: every present manifest has its layers`)
    const names = broken.slice(0, 5).map((b) => `${b.name} (${b.missing} layer(s) missing)`)
    const example = broken[0]?.name ?? '<image>'
    return finding('missing-layers', {
      problem: `${broken.length} image(s) have their manifest but not all their layers: ${names.join(', ')}${broken.length > 5 ? ', …' : ''}.`,
      impact: 'peers are sent here for these images and get 404 for the missing layers; this is what discard_unpacked_layers = true (or a manual content removal) leaves behind.',
      fix: `${discardFix(layout, talos)}\nThen fetch the missing layers again, e.g.: ctr -n ${ns} content fetch ${example}`,
    }, 'layers missing from the content store')
  }

  /**
   * The other checks read configuration; this one looks at what happened. Images containerd stored since the daemon
   * started, while none of containerd's requests reached the mirror, mean containerd does not use the mirror whatever
   * the configuration says (containerd not restarted after config_path changed, a pull path that ignores hosts.toml).
   */
  private checkTraffic (images: readonly ImageRecord[], talos: boolean): CheckResult {
    const requests = this.components.mirrorRequests
    if (requests === undefined) return skipped('mirror-traffic', 'only the daemon sees the requests containerd sends to the mirror')
    let registries: RegistryUrl[]
    try {
      registries = parseMirroredRegistries(this.init.mirroredRegistries ?? [])
    } catch (err) {
      return skipped('mirror-traffic', `invalid registry flags: ${message(err)}`)
    }
    const mirrored = (registry: string): boolean => registries.some((r) => r.wildcard || r.host === registry)
    const names = new Map<string, string>()
    for (const image of images) {
      if (mirrored(image.registry) && !names.has(image.digest)) names.set(image.digest, image.name)
    }
    if (this.baseline === undefined) {
      this.baseline = new Set(names.keys())
      return ok('mirror-traffic', `watching pulls: ${names.size} image(s) were here before the daemon started`)
    }
    const baseline = this.baseline
    const pulled = [...names].filter(([digest]) => !baseline.has(digest)).map(([, name]) => name)
    const count = requests()
    if (count > 0) return ok('mirror-traffic', `containerd sent the mirror ${count} request(s) since the daemon started`)
    const threshold = this.init.pullsWithoutTraffic ?? 3
    if (pulled.length < threshold) return ok('mirror-traffic', `${pulled.length} new image(s) since the daemon started, no request to the mirror yet`)
    const shown = pulled.slice(0, 3).join(', ') + (pulled.length > 3 ? ', …' : '')
    return finding('mirror-traffic', {
      problem: `containerd stored ${pulled.length} new images since the daemon started (${shown}) without sending this mirror a single request`,
      impact: 'containerd does not use the mirror: every pull goes to the upstream registry and no peer is asked.',
      fix: talos
        ? `Talos reads hosts.toml from ${talosConfigPath}: check that the chart sets spegel.containerdRegistryConfigPath=${talosConfigPath} and that the configuration init container of the spegel pod on this node succeeded (kubectl -n spegel logs <pod> -c configuration); then run spegel doctor on the node (see the README)`
        : 'check that containerd\'s config_path includes the directory spegel configuration writes to and that containerd was restarted after it changed; with containerd 2.1+ and its transfer service, pulls may ignore hosts.toml: set use_local_image_pull = true under [plugins."io.containerd.cri.v1.images"]; then run spegel doctor on the node (see the README)',
    }, `${pulled.length} new images, 0 requests to the mirror`)
  }

  /**
   * Registry directories other than `_default` (and the backup) whose hosts.toml does not name the mirror `_default`
   * names (`mirror.href`, or its first host when the target is not known here).
   */
  private async shadowingDirectories (root: string, dir: string, registries: readonly RegistryUrl[], mirror: { href?: string }, fix: string): Promise<Finding[]> {
    const hostsOf = async (name: string): Promise<string[] | undefined> => {
      try {
        const doc = parseToml(await readFile(join(root, dir, name, 'hosts.toml'), 'utf8')) as { host?: Record<string, unknown> }
        return Object.keys(doc.host ?? {}).map((h) => h.replace(/\/+$/, ''))
      } catch {
        return undefined
      }
    }
    const wanted = mirror.href ?? (await hostsOf(defaultHostDirectory))?.[0]
    if (wanted === undefined) return []
    let names: string[]
    try {
      names = (await readdir(join(root, dir), { withFileTypes: true })).filter((e) => e.isDirectory() || e.isSymbolicLink()).map((e) => e.name)
    } catch {
      return []
    }
    const listed = new Set(registries.map((r) => r.host))
    const findings: Finding[] = []
    for (const name of names.sort()) {
      if (listed.has(name) || name.startsWith('_backup')) continue
      const hosts = await hostsOf(name)
      if (hosts === undefined || hosts.includes(wanted)) continue
      findings.push({
        check: 'hosts-toml',
        problem: `${join(dir, name, 'hosts.toml')} does not name this node's mirror ${wanted}, and containerd reads it for ${name} instead of _default.`,
        impact: `pulls from ${name} do not go through this node's mirror.`,
        fix: `${fix} (the configuration puts the mirror first in every registry's own directory and keeps the rest)`,
      })
    }
    return findings
  }

  private async checkHosts (settings: CriImageSettings, talos: boolean): Promise<CheckResult> {
    const dir = normalizeDir(this.init.registryConfigPath)
    const root = this.init.hostRoot ?? ''
    let registries: RegistryUrl[]
    let target: RegistryUrl | undefined
    try {
      registries = parseMirroredRegistries(this.init.mirroredRegistries ?? [])
      target = (this.init.mirrorTargets ?? []).length > 0 ? parseMirrorTargets(this.init.mirrorTargets ?? [])[0] : undefined
    } catch (err) {
      return skipped('hosts-toml', `invalid registry flags: ${message(err)}`)
    }
    if (!(await isDirectory(join(root, dir)))) {
      if (this.init.hostsOptional === true) return skipped('hosts-toml', `${dir} is not visible to this process`)
    }
    const configureCmd = `spegel configuration --containerd-registry-config-path=${dir}` +
      (this.init.mirroredRegistries ?? []).map((r) => ` --mirrored-registries ${r}`).join('') +
      ` --mirror-targets ${target?.href ?? 'http://<node-ip>:30020'}`
    const rerun = talos
      ? `check that the chart uses spegel.containerdRegistryConfigPath=${talosConfigPath} and that the configuration init container of the spegel pod on this node succeeded (kubectl logs <pod> -c configuration), or run: ${configureCmd}`
      : `check that the configuration init container of the spegel pod on this node succeeded (kubectl -n spegel logs <pod> -c configuration), or run: ${configureCmd}`
    const findings: Finding[] = []
    for (const registry of registries) {
      const label = registry.wildcard ? 'every registry (_default)' : registry.host
      const candidates = registry.wildcard ? [registry.host] : [registry.host, '_default']
      let found: { path: string, hosts: string[] } | undefined
      let invalid: string | undefined
      for (const name of candidates) {
        const path = join(dir, name, 'hosts.toml')
        let text: string
        try {
          text = await readFile(join(root, path), 'utf8')
        } catch {
          continue
        }
        try {
          const doc = parseToml(text) as { host?: Record<string, unknown> }
          found = { path, hosts: Object.keys(doc.host ?? {}) }
        } catch (err) {
          invalid = `${path} is not valid TOML: ${message(err)}`
        }
        break
      }
      if (invalid !== undefined) {
        findings.push({ check: 'hosts-toml', problem: invalid, impact: `containerd ignores it, so pulls from ${label} skip the mirror.`, fix: rerun })
        continue
      }
      if (found === undefined) {
        findings.push({
          check: 'hosts-toml',
          problem: `no hosts.toml for ${label} in ${dir}.`,
          impact: `containerd pulls ${label} straight from the upstream registry, never through this node's mirror.`,
          fix: rerun,
        })
        continue
      }
      const wanted = target?.href
      const names = found.hosts.map((h) => h.replace(/\/+$/, ''))
      if (wanted !== undefined ? !names.includes(wanted) : names.length === 0) {
        findings.push({
          check: 'hosts-toml',
          problem: wanted !== undefined
            ? `${found.path} does not name this node's mirror ${wanted} (hosts: ${names.length > 0 ? names.join(', ') : 'none'}).`
            : `${found.path} names no mirror host.`,
          impact: `pulls from ${label} do not go through this node's mirror.`,
          fix: rerun,
        })
      }
    }
    // With every registry mirrored, a registry with a directory of its own is read there instead of from _default:
    // `spegel configuration` puts the mirror into each, but a directory written since (Talos rewrites its registries
    // when the machine config changes) sends that registry past the mirror until the configuration runs again.
    const wildcardMirror = defaultMirror(registries, target)
    if (wildcardMirror !== undefined) findings.push(...await this.shadowingDirectories(root, dir, registries, wildcardMirror, rerun))
    if (findings.length > 0) return { check: 'hosts-toml', status: 'finding', summary: `${findings.length} registr${findings.length === 1 ? 'y is' : 'ies are'} not mirrored through this node`, findings }
    return ok('hosts-toml', `hosts.toml in ${dir} sends ${registries.map((r) => r.wildcard ? '_default' : r.host).join(', ')} to ${target?.href ?? 'a mirror'}`)
  }
}

/** The mirror that `_default` must name when every registry is mirrored: the first target, or any host (unknown target). */
function defaultMirror (registries: readonly RegistryUrl[], target: RegistryUrl | undefined): { href?: string } | undefined {
  if (!registries.some((r) => r.wildcard)) return undefined
  return target !== undefined ? { href: target.href } : {}
}

function discardFix (layout: CriLayout, talos: boolean): string {
  if (talos) return `apply this Talos machine-config patch:\n${talosDiscardPatch}\n${talosApplyHint}`
  return `set in containerd's config (/etc/containerd/config.toml):\n${criTomlSnippet(layout, { discardUnpackedLayers: false })}\n` +
    'then restart containerd (systemctl restart containerd). On EKS set it through nodeadm\'s NodeConfig containerd.config.'
}

/**
 * Counts the layers (and configs) missing under the present manifests of an image. Manifests of an index that are
 * absent are normal (only this node's platform was pulled) and are not counted.
 */
async function missingLayers (store: ContentStore, top: string, signal: AbortSignal | undefined): Promise<number> {
  let missing = 0
  await walkImage(store, top, {
    ...(signal !== undefined ? { signal } : {}),
    onMissing: (_child, parent) => { if (!isIndexMediaType(parent.mediaType)) missing++ },
  })
  return missing
}

async function isDirectory (path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory()
  } catch {
    return false
  }
}

function ok (check: CheckName, summary: string): CheckResult {
  return { check, status: 'ok', summary, findings: [] }
}

function skipped (check: CheckName, summary: string): CheckResult {
  return { check, status: 'skipped', summary, findings: [] }
}

function finding (check: CheckName, f: Omit<Finding, 'check'>, summary: string): CheckResult {
  return { check, status: 'finding', summary, findings: [{ check, ...f }] }
}

function message (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** The report as plain text: one line per check, then each finding with what, why and the fix. */
export function formatReport (report: DoctorReport): string {
  const lines: string[] = []
  const n = report.findings.length
  lines.push(n === 0 ? 'spegel doctor: no findings' : `spegel doctor: ${n} finding${n === 1 ? '' : 's'}`)
  if (report.containerdVersion !== undefined) lines.push(`containerd ${report.containerdVersion}${report.layout !== undefined ? `, CRI config layout io.containerd.${report.layout}` : ''}${report.talos ? ', Talos' : ''}`)
  for (const r of report.results) {
    const mark = r.status === 'ok' ? '[ok]     ' : r.status === 'skipped' ? '[skipped]' : '[FINDING]'
    lines.push(`${mark} ${r.check}: ${r.summary}`)
  }
  for (const f of report.findings) {
    lines.push('', `== ${f.check}`, `What is wrong: ${f.problem}`, `Why it matters: ${f.impact}`, 'Fix:')
    for (const l of f.fix.split('\n')) lines.push(`  ${l}`)
  }
  return lines.join('\n') + '\n'
}

export { readyzDetail, runDoctorLoop } from './daemon.ts'
