import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse, parseAllDocuments } from 'yaml'
import { ChartRenderer } from './gotemplate.ts'

// Loads the chart from disk and renders it the way `helm template` would for given values (helm is not available
// here; the workflow in .github/workflows runs the real helm).

export const repoRoot = new URL('../../../', import.meta.url).pathname
export const chartDir = join(repoRoot, 'chart')

export type Values = Record<string, unknown>

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

export interface RenderOptions {
  values?: Values
  releaseName?: string
  namespace?: string
  apiVersions?: string[]
}

export interface Rendered {
  /** Output text per template file. */
  text: Map<string, string>
  /** Kubernetes objects from every .yaml template, in file order. */
  objects: Array<Record<string, any>>
}

export function renderChart (options: RenderOptions = {}): Rendered {
  const renderer = new ChartRenderer()
  for (const f of templateFiles()) renderer.add(f, readFileSync(join(chartDir, 'templates', f), 'utf8'))
  const meta = chartMeta()
  const values = mergeValues(chartValues(), options.values ?? {})
  const ctx = {
    Values: values,
    Release: { Name: options.releaseName ?? 'spegel', Namespace: options.namespace ?? 'spegel', Service: 'Helm' },
    Chart: { Name: meta.name, Version: meta.version, AppVersion: meta.appVersion },
    Capabilities: { APIVersions: options.apiVersions ?? ['v1', 'apps/v1'] },
    Files: { 'monitoring/grafana-dashboard.json': readFileSync(join(chartDir, 'monitoring/grafana-dashboard.json'), 'utf8') },
  }
  const text = new Map<string, string>()
  const objects: Array<Record<string, any>> = []
  for (const f of templateFiles()) {
    if (f.startsWith('_')) continue
    const out = renderer.render(f, ctx)
    text.set(f, out)
    if (!f.endsWith('.yaml')) continue
    for (const doc of parseAllDocuments(out)) {
      if (doc.errors.length > 0) throw new Error(`${f}: rendered YAML does not parse: ${doc.errors[0]?.message}\n${out}`)
      const obj = doc.toJS() as Record<string, any> | null
      if (obj !== null) objects.push(obj)
    }
  }
  return { text, objects }
}

export function findObject (r: Rendered, kind: string, name: string): Record<string, any> {
  const obj = r.objects.find((o) => o.kind === kind && o.metadata?.name === name)
  if (obj === undefined) throw new Error(`no ${kind} ${name}; have ${r.objects.map((o) => `${o.kind}/${o.metadata?.name}`).join(', ')}`)
  return obj
}
