import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseDuration } from '../../../src/util/duration.ts'
import { chartDir, chartMeta, chartValues, HelmError, mergeValues, readYaml, renderChart, repoRoot } from './chart.ts'
import type { Values } from './chart.ts'
import { schemaErrors, validate, valuesSchema as schema } from './values-schema.ts'
import type { Schema } from './values-schema.ts'

interface KeysFixture { keys: Record<string, unknown>, differsFromSpegel: Record<string, string> }
const fixture = JSON.parse(readFileSync(join(repoRoot, 'test/fixtures/spegel-values-keys.json'), 'utf8')) as KeysFixture

/** Visits every subschema with the dotted values path it describes (`a.b`, `a[]` for items, `a.*` for map values). */
function walkSchema (s: Schema, visit: (s: Schema, path: string) => void, path = ''): void {
  visit(s, path)
  for (const [k, sub] of Object.entries((s.properties ?? {}) as Record<string, Schema>)) walkSchema(sub, visit, path === '' ? k : `${path}.${k}`)
  if (s.items !== undefined && typeof s.items === 'object' && !Array.isArray(s.items)) walkSchema(s.items as Schema, visit, `${path}[]`)
  if (s.additionalProperties !== undefined && typeof s.additionalProperties === 'object') walkSchema(s.additionalProperties as Schema, visit, `${path}.*`)
}

function lookup (values: unknown, dotted: string): { found: boolean, value: unknown } {
  let v: unknown = values
  for (const part of dotted.split('.')) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, part)) return { found: false, value: undefined }
    v = (v as Record<string, unknown>)[part]
  }
  return { found: true, value: v }
}

/** Spegel's own default values, rebuilt from the fixture (what `helm show values` of Spegel's chart gives). */
function spegelDefaults (): Values {
  const out: Values = {}
  for (const [key, value] of Object.entries(fixture.keys)) {
    const parts = key.split('.')
    let node = out
    for (const p of parts.slice(0, -1)) node = (node[p] ??= {}) as Values
    node[parts[parts.length - 1] as string] = structuredClone(value)
  }
  return out
}

describe('Chart.yaml', () => {
  it('is a v2 application chart named spegel with version and appVersion', () => {
    const meta = chartMeta() as unknown as Record<string, unknown>
    assert.equal(meta.apiVersion, 'v2')
    assert.equal(meta.name, 'spegel')
    assert.equal(meta.type, 'application')
    assert.match(String(meta.version), /^\d+\.\d+\.\d+(-[\w.]+)?$/)
    assert.match(String(meta.appVersion), /^v\d+\.\d+\.\d+/)
  })

  it('.helmignore keeps the helm-unittest suites out of the package', () => {
    const ignore = readFileSync(join(chartDir, '.helmignore'), 'utf8').split('\n').map((l) => l.trim())
    assert.ok(ignore.includes('tests/'))
  })
})

describe('values.yaml against Spegel\'s values', () => {
  const values = chartValues()

  it('has every key of Spegel\'s chart with Spegel\'s default', () => {
    const problems: string[] = []
    for (const [key, spegelDefault] of Object.entries(fixture.keys)) {
      const { found, value } = lookup(values, key)
      if (!found) problems.push(`${key}: missing`)
      else if (key in fixture.differsFromSpegel) continue
      else {
        try {
          assert.deepEqual(value, spegelDefault)
        } catch {
          problems.push(`${key}: ${JSON.stringify(value)} instead of Spegel's ${JSON.stringify(spegelDefault)}`)
        }
      }
    }
    assert.deepEqual(problems, [])
    assert.ok(Object.keys(fixture.keys).length >= 75, 'the fixture lists all of section 9.1')
  })

  it('documents the keys whose default deliberately differs, and only image.repository differs', () => {
    assert.deepEqual(Object.keys(fixture.differsFromSpegel), ['image.repository'])
    assert.equal(lookup(values, 'image.repository').value, 'ghcr.io/spegel-ts/spegel')
    const text = readFileSync(join(chartDir, 'values.yaml'), 'utf8')
    assert.match(text, /Differs from Spegel's default \(ghcr\.io\/spegel-org\/spegel\)/)
  })

  it('has no key that Spegel\'s chart does not have (no invented values), but for the features Spegel lacks', () => {
    // Herd protection (issue 11), the private DHT, tag confirmation and the registry's mutual TLS (issue 18) have no counterpart in Spegel; a Spegel values file
    // still works unchanged (the key is made by the chart).
    const ours = new Set(['spegel.herdProtection', 'spegel.routerPsk', 'spegel.confirmTags', 'spegel.registryTls', 'spegel.peerRedirect'])
    const extra: string[] = []
    const walk = (node: unknown, path: string): void => {
      if (path !== '' && (path in fixture.keys || ours.has(path))) return
      if (node !== null && typeof node === 'object' && !Array.isArray(node) && Object.keys(node).length > 0) {
        for (const [k, v] of Object.entries(node)) walk(v, path === '' ? k : `${path}.${k}`)
      } else extra.push(path)
    }
    walk(values, '')
    assert.deepEqual(extra, [])
  })
})

describe('values.schema.json', () => {
  it('is draft-07 and allows unknown keys everywhere (old Spegel values files carry removed keys)', () => {
    assert.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#')
    walkSchema(schema, (s, path) => {
      assert.notEqual(s.additionalProperties, false, `${path || '(root)'} must not reject unknown keys`)
      assert.equal(s.required, undefined, `${path || '(root)'}: required keys would reject valid partial values files`)
    })
  })

  it('describes only keys that exist in values.yaml, and every key of values.yaml', () => {
    const values = chartValues()
    const described = new Set<string>()
    walkSchema(schema, (_s, path) => {
      if (path === '' || path.includes('[]') || path.includes('*')) return
      described.add(path)
      assert.ok(lookup(values, path).found, `schema describes ${path}, which values.yaml does not have`)
    })
    for (const key of Object.keys(fixture.keys)) assert.ok(described.has(key), `schema does not describe ${key}`)
  })

  it('accepts the chart\'s own values.yaml', () => {
    assert.deepEqual(validate(schema, chartValues()), [])
  })

  it('accepts Spegel\'s default values and a values file written for older Spegel charts', () => {
    assert.deepEqual(validate(schema, spegelDefaults()), [])
    const legacy = mergeValues(spegelDefaults(), {
      image: { repository: 'ghcr.io/spegel-org/spegel', tag: 'v0.0.30', digest: 'sha256:' + 'a'.repeat(64) },
      service: { registry: { hostPort: 30020, nodePort: 30021, topologyAwareHintsEnabled: true, usePreferSameNodeTrafficDistribution: false } },
      spegel: {
        logLevel: 'debug',
        registries: ['https://docker.io'],
        mirroredRegistries: ['https://docker.io', 'https://ghcr.io', 'http://10.0.0.5:5000', '_default'],
        additionalMirrorTargets: ['https://zot.example.com'],
        appendMirrors: true,
        blobSpeed: '',
        kubeconfigPath: '',
        otel: { endpoint: '', insecure: false, serviceName: 'spegel', sampler: 'parentbased_always_off' },
        mirrorResolveTimeout: '1.5s',
        mirrorResolveRetries: 5,
        registryFilters: ['.*:latest$', '^docker\\.io/'],
        containerdContentPath: '',
        containerdRegistryConfigPath: '/etc/cri/conf.d/hosts',
      },
      grafanaDashboard: { enabled: true, mode: 'GrafanaOperator', grafanaOperator: { matchLabels: { dashboards: 'grafana' } } },
      verticalPodAutoscaler: { enabled: true, recommenders: [{ name: 'custom' }], updatePolicy: { updateMode: 'Initial' } },
      tolerations: [],
      nodeSelector: { 'kubernetes.io/os': 'linux', spegel: 'schedule' },
      podSecurityContext: { fsGroup: 2000 },
      resources: { limits: { memory: '256Mi', cpu: 1 } },
      extraVolumes: [{ name: 'x', emptyDir: {} }],
    })
    assert.deepEqual(validate(schema, legacy), [])
  })

  it('accepts the Talos values file from talos-patches/', () => {
    const talos = readYaml(join(repoRoot, 'talos-patches/spegel-values.yaml')) as Values
    assert.deepEqual(validate(schema, mergeValues(chartValues(), talos)), [])
    assert.deepEqual(validate(schema, talos), [])
  })

  it('accepts the values files the chart tests render with (test/fixtures/chart/)', () => {
    for (const f of ['spegel-keys-values.yaml', 'optional-values.yaml']) {
      const values = readYaml(join(repoRoot, 'test/fixtures/chart', f)) as Values
      assert.deepEqual(validate(schema, mergeValues(chartValues(), values)), [], f)
      assert.deepEqual(validate(schema, values), [], f)
    }
  })

  const bad: Array<{ name: string, values: Values, path: string, keyword: string }> = [
    { name: 'an unknown log level', values: { spegel: { logLevel: 'VERBOSE' } }, path: 'spegel.logLevel', keyword: 'enum' },
    { name: 'a duration without unit', values: { spegel: { mirrorResolveTimeout: '20' } }, path: 'spegel.mirrorResolveTimeout', keyword: 'pattern' },
    { name: 'a numeric duration other than 0', values: { spegel: { mirrorResolveTimeout: 20 } }, path: 'spegel.mirrorResolveTimeout', keyword: 'maximum' },
    { name: 'a node port out of range', values: { service: { registry: { nodePort: 70000 } } }, path: 'service.registry.nodePort', keyword: 'maximum' },
    { name: 'a port given as text', values: { service: { registry: { port: 'five thousand' } } }, path: 'service.registry.port', keyword: 'type' },
    { name: 'an unknown dashboard mode', values: { grafanaDashboard: { mode: 'ConfigMap' } }, path: 'grafanaDashboard.mode', keyword: 'enum' },
    { name: 'a registry without scheme', values: { spegel: { mirroredRegistries: ['docker.io'] } }, path: 'spegel.mirroredRegistries[0]', keyword: 'pattern' },
    { name: 'a relative config path', values: { spegel: { containerdRegistryConfigPath: 'etc/cri/conf.d/hosts' } }, path: 'spegel.containerdRegistryConfigPath', keyword: 'pattern' },
    { name: 'a boolean given as a list', values: { spegel: { resolveTags: ['true'] } }, path: 'spegel.resolveTags', keyword: 'type' },
    { name: 'a list given as a string', values: { spegel: { registryFilters: ':latest$' } }, path: 'spegel.registryFilters', keyword: 'type' },
    { name: 'two VPA recommenders', values: { verticalPodAutoscaler: { recommenders: [{ name: 'a' }, { name: 'b' }] } }, path: 'verticalPodAutoscaler.recommenders', keyword: 'maxItems' },
    { name: 'a bad pull policy', values: { image: { pullPolicy: 'Sometimes' } }, path: 'image.pullPolicy', keyword: 'enum' },
    { name: 'a non-string label', values: { commonLabels: { tier: 1 } }, path: 'commonLabels.tier', keyword: 'type' },
  ]
  for (const b of bad) {
    it(`rejects ${b.name} at ${b.path}, and so does helm`, () => {
      const errors = schemaErrors(schema, mergeValues(chartValues(), b.values))
      // A value given as a number where a string or 0 is allowed fails more than one branch of the same key.
      assert.ok(errors.length >= 1, 'rejected')
      assert.deepEqual([...new Set(errors.map((e) => e.path))], [b.path], JSON.stringify(errors))
      assert.ok(errors.some((e) => e.keyword === b.keyword), JSON.stringify(errors))
      const pointer = '/' + b.path.replace(/\[(\d+)\]/g, '.$1').split('.').join('/')
      assert.throws(() => renderChart({ values: b.values }),
        (e: unknown) => e instanceof HelmError && /values don't meet the specifications of the schema/.test(e.stderr) && e.stderr.includes(`at '${pointer}'`),
        `helm template refuses the values at ${pointer}`)
    })
  }

  it('accepts exactly the durations our CLI parses (pattern agrees with parseDuration)', () => {
    const durationSchema = ((schema.properties?.spegel as Schema).properties?.mirrorResolveTimeout) as Schema
    const good = ['20ms', '0', '1s', '1.5s', '2h45m', '100us', '10µs', '1m30s', '.5s']
    const badOnes = ['20', 'ms', '1d', '20 ms', '-5s', '']
    for (const d of good) {
      assert.deepEqual(validate(durationSchema, d), [], d)
      assert.doesNotThrow(() => parseDuration(d), d)
    }
    for (const d of badOnes) assert.notDeepEqual(validate(durationSchema, d), [], d)
  })
})
