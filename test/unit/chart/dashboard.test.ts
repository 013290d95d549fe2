import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Metrics } from '../../../src/metrics/index.ts'
import { chartDir, repoRoot } from './chart.ts'

interface ExportedMetric { name: string, type: 'counter' | 'gauge' | 'histogram' | 'summary', labels: string[], source: string }
const exported = (JSON.parse(readFileSync(join(repoRoot, 'test/fixtures/exported-metrics.json'), 'utf8')) as { metrics: ExportedMetric[] }).metrics
const dashboard = JSON.parse(readFileSync(join(chartDir, 'monitoring/grafana-dashboard.json'), 'utf8')) as Record<string, any>

// Labels Prometheus adds to every series when scraping through a ServiceMonitor (target labels).
const targetLabels = new Set(['job', 'instance', 'namespace', 'pod', 'container', 'service', 'endpoint', 'node'])
const promqlWords = new Set(['sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group',
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'le'])

/** Every PromQL expression in the dashboard: panel targets and query variables. */
function expressions (): Array<{ where: string, expr: string }> {
  const out: Array<{ where: string, expr: string }> = []
  const walk = (panels: Array<Record<string, any>>): void => {
    for (const p of panels) {
      for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}"`, expr: t.expr })
      walk(p.panels ?? [])
    }
  }
  walk(dashboard.panels)
  for (const v of dashboard.templating.list) {
    if (v.type === 'query') out.push({ where: `variable ${v.name}`, expr: String(v.query.query ?? v.query).replace(/^label_values\((.*),\s*\w+\)$/, '$1') })
  }
  return out
}

/** Metric names and the labels used with each, from one expression (enough PromQL for the dashboard's queries). */
function metricsIn (expr: string): { metrics: Array<{ name: string, matchers: string[] }>, groupLabels: string[] } {
  let e = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""') // string literals
  e = e.replace(/\$\w+/g, '1') // Grafana variables ($__range, $__rate_interval)
  e = e.replace(/\[[^\]]*\]/g, '') // range selectors
  const groupLabels: string[] = []
  e = e.replace(/\b(by|without|on|ignoring)\s*\(([^)]*)\)/g, (_, _kw: string, labels: string) => {
    groupLabels.push(...labels.split(',').map((l) => l.trim()).filter((l) => l !== ''))
    return ' '
  })
  const metrics: Array<{ name: string, matchers: string[] }> = []
  for (const m of e.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?/g)) {
    const [, name, braces, call] = m
    if (call !== undefined || promqlWords.has(name as string)) continue
    const matchers = braces === undefined ? [] : [...braces.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g)].map((x) => x[1] as string)
    metrics.push({ name: name as string, matchers })
  }
  return { metrics, groupLabels }
}

function family (series: string): ExportedMetric | undefined {
  const direct = exported.find((m) => m.name === series)
  if (direct !== undefined) return direct
  const base = series.replace(/_(bucket|sum|count)$/, '')
  return exported.find((m) => m.name === base && (m.type === 'histogram' || m.type === 'summary'))
}

describe('Grafana dashboard', () => {
  it('is a Grafana dashboard with a title, a uid, a datasource variable and uniquely numbered panels', () => {
    assert.equal(dashboard.title, 'Spegel stateless cluster local OCI registry mirror')
    assert.equal(typeof dashboard.uid, 'string')
    assert.ok(dashboard.templating.list.some((v: any) => v.type === 'datasource' && v.query === 'prometheus'))
    const ids = dashboard.panels.map((p: any) => p.id)
    assert.equal(new Set(ids).size, ids.length)
    for (const p of dashboard.panels) {
      assert.ok(p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `panel ${p.title} fits the 24-column grid`)
      if (p.type !== 'row') assert.ok(p.targets.length > 0, `panel ${p.title} has queries`)
    }
    assert.ok(expressions().length >= 15)
  })

  it('queries only metrics the daemon exports, with labels those metrics have', () => {
    const problems: string[] = []
    const seen = new Set<string>()
    for (const { where, expr } of expressions()) {
      const { metrics, groupLabels } = metricsIn(expr)
      assert.ok(metrics.length > 0, `${where}: no metric found in ${expr}`)
      for (const { name, matchers } of metrics) {
        const fam = family(name)
        if (fam === undefined) { problems.push(`${where}: ${name} is not exported`); continue }
        seen.add(fam.name)
        for (const l of [...matchers, ...groupLabels]) {
          if (l === 'le' && fam.type === 'histogram') continue
          if (!fam.labels.includes(l) && !targetLabels.has(l)) problems.push(`${where}: ${name} has no label ${l}`)
        }
      }
    }
    assert.deepEqual(problems, [])
    for (const core of ['spegel_mirror_requests_total', 'spegel_resolve_duration_seconds', 'http_request_duration_seconds', 'process_resident_memory_bytes']) {
      assert.ok(seen.has(core), `the dashboard shows ${core}`)
    }
  })

  it('the metric extraction finds names and labels (self-check)', () => {
    const { metrics, groupLabels } = metricsIn('histogram_quantile(0.99, sum by (handler, le) (rate(http_request_duration_seconds_bucket{pod=~"$pod", code!="200"}[$__rate_interval])))')
    assert.deepEqual(metrics, [{ name: 'http_request_duration_seconds_bucket', matchers: ['pod', 'code'] }])
    assert.deepEqual(groupLabels, ['handler', 'le'])
    assert.equal(family('nope_total'), undefined)
  })
})

describe('exported-metrics fixture', () => {
  it('matches what src/metrics registers: same names, types and labels, nothing missing', async () => {
    const metrics = new Metrics()
    const registered = await metrics.registry.getMetricsAsJSON()
    const byName = new Map(registered.map((m) => [m.name, m]))
    for (const m of exported) {
      const r = byName.get(m.name)
      assert.ok(r !== undefined, `${m.name} is in the fixture but not registered`)
      assert.equal(String(r.type), m.type, m.name)
      const instance = metrics.registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] }
      if (m.source === 'spegel') assert.deepEqual([...(instance.labelNames ?? [])].sort(), [...m.labels].sort(), m.name)
    }
    for (const name of byName.keys()) assert.ok(exported.some((m) => m.name === name), `${name} is registered but missing from the fixture`)
  })
})
