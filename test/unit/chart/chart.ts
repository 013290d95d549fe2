import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse, parseAllDocuments } from 'yaml'

// The chart as the real helm (v4, installed at .tools/bin/helm by .ci/setup.d/10-helm.sh) lints and renders it.

export const repoRoot = new URL('../../../', import.meta.url).pathname
export const chartDir = join(repoRoot, 'chart')
export const helmBin = join(repoRoot, '.tools/bin/helm')

export type Values = Record<string, unknown>
export type K8sObject = Record<string, any>

export class HelmNotInstalledError extends Error {
  constructor () {
    super(`helm is not installed at ${helmBin}: run \`bash .ci/setup.sh\` (or \`bash .ci/setup.d/10-helm.sh\`) from the repository root`)
    this.name = 'HelmNotInstalledError'
  }
}

/** helm exited non-zero; `stderr` carries its message (template `fail`, schema violations, lint findings). */
export class HelmError extends Error {
  readonly stderr: string
  readonly stdout: string
  constructor (args: string[], stdout: string, stderr: string) {
    super(`helm ${args.join(' ')} failed:\n${stderr}${stdout}`)
    this.name = 'HelmError'
    this.stderr = stderr
    this.stdout = stdout
  }
}

export function readYaml (path: string): unknown {
  return parse(readFileSync(path, 'utf8'))
}

export function chartValues (): Values {
  return readYaml(join(chartDir, 'values.yaml')) as Values
}

export function chartMeta (): { name: string, version: string, appVersion?: string } {
  return readYaml(join(chartDir, 'Chart.yaml')) as { name: string, version: string, appVersion?: string }
}

export function templateFiles (): string[] {
  return readdirSync(join(chartDir, 'templates')).filter((f) => /\.(yaml|tpl|txt)$/.test(f)).sort()
}

function isMap (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** Helm's coalescing of user values over chart defaults: maps merge, anything else replaces, null deletes. */
export function mergeValues (base: Values, override: Values): Values {
  const out: Values = structuredClone(base)
  for (const [k, v] of Object.entries(override)) {
    if (v === null) delete out[k]
    else if (isMap(v) && isMap(out[k])) out[k] = mergeValues(out[k], v)
    else out[k] = structuredClone(v)
  }
  return out
}

// One scratch directory per test process (values files, helm's own cache/config/data homes), removed on exit.
let scratch: string | undefined
let written = 0
function scratchDir (): string {
  if (scratch === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'spegel-chart-'))
    for (const d of ['cache', 'config', 'data']) mkdirSync(join(dir, d))
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
    scratch = dir
  }
  return scratch
}

/** Runs helm with a private home (no user repositories or plugins) and no cluster; returns stdout. */
export function helm (args: string[]): string {
  if (!existsSync(helmBin)) throw new HelmNotInstalledError()
  const dir = scratchDir()
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    HELM_CACHE_HOME: join(dir, 'cache'),
    HELM_CONFIG_HOME: join(dir, 'config'),
    HELM_DATA_HOME: join(dir, 'data'),
    KUBECONFIG: join(dir, 'no-kubeconfig'),
  }
  try {
    return execFileSync(helmBin, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 })
  } catch (e) {
    const err = e as { stdout?: string, stderr?: string, status?: number | null }
    if (typeof err.status !== 'number') throw e
    throw new HelmError(args, err.stdout ?? '', err.stderr ?? '')
  }
}

export interface RenderOptions {
  /** Values given as a file (`-f`), after `valuesFiles`. */
  values?: Values
  /** Values files (`-f`), in order. */
  valuesFiles?: string[]
  releaseName?: string
  namespace?: string
  /** Extra API versions the "cluster" has (`--api-versions`), e.g. autoscaling.k8s.io/v1 for the VPA. */
  apiVersions?: string[]
  /** Another chart directory than ours. */
  chart?: string
}

function valuesArgs (options: RenderOptions): string[] {
  const args: string[] = []
  for (const f of options.valuesFiles ?? []) args.push('-f', f)
  if (options.values !== undefined) {
    const file = join(scratchDir(), `values-${++written}.json`)
    writeFileSync(file, JSON.stringify(options.values)) // JSON is YAML
    args.push('-f', file)
  }
  return args
}

export interface Rendered {
  /** Every object helm renders, hooks included, in helm's order. */
  objects: K8sObject[]
}

/** `helm template`: the objects an install would create. Throws HelmError when rendering fails. */
export function renderChart (options: RenderOptions = {}): Rendered {
  const args = ['template', options.releaseName ?? 'spegel', options.chart ?? chartDir, '--namespace', options.namespace ?? 'spegel', ...valuesArgs(options)]
  for (const v of options.apiVersions ?? []) args.push('--api-versions', v)
  const out = helm(args)
  const objects: K8sObject[] = []
  for (const doc of parseAllDocuments(out)) {
    if (doc.errors.length > 0) throw new Error(`helm template output does not parse: ${doc.errors[0]?.message}\n${out}`)
    const obj = doc.toJS() as K8sObject | null
    if (obj !== null) objects.push(obj)
  }
  return { objects }
}

/** NOTES.txt as `helm install` prints it (`helm template` leaves it out); a client-only dry run, no cluster. */
export function renderNotes (options: RenderOptions = {}): string {
  const args = ['install', options.releaseName ?? 'spegel', options.chart ?? chartDir, '--namespace', options.namespace ?? 'spegel',
    '--dry-run=client', '--output', 'json', ...valuesArgs(options)]
  const release = JSON.parse(helm(args)) as { info?: { notes?: string } }
  return release.info?.notes ?? ''
}

/** `helm lint` (with `--strict`: warnings fail too); returns its report, throws HelmError when the chart fails. */
export function lintChart (options: RenderOptions & { strict?: boolean } = {}): string {
  const args = ['lint', options.chart ?? chartDir, '--namespace', options.namespace ?? 'spegel', ...valuesArgs(options)]
  if (options.strict === true) args.push('--strict')
  return helm(args)
}

export function findObject (r: Rendered, kind: string, name: string): K8sObject {
  const obj = r.objects.find((o) => o.kind === kind && o.metadata?.name === name)
  if (obj === undefined) throw new Error(`no ${kind} ${name}; have ${r.objects.map((o) => `${o.kind}/${o.metadata?.name}`).join(', ')}`)
  return obj
}
