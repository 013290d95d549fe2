import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { parse as parseYaml } from 'yaml'
import { chartDir, chartValues, mergeValues, renderChart, repoRoot } from '../chart/chart.ts'
import type { Values } from '../chart/chart.ts'
import { validate } from '../chart/values-schema.ts'
import type { Schema } from '../chart/values-schema.ts'

const dir = join(repoRoot, 'talos-patches')
const text = (f: string): string => readFileSync(join(dir, f), 'utf8')
const yamlOf = (f: string): any => parseYaml(text(f))
const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8')) as Schema

interface MachineFile { path: string, op: string, content: string, permissions?: unknown }

/** The checks a machine.files entry must pass to really keep unpacked layers on Talos. */
function assertKeepsLayers (file: MachineFile): void {
  assert.equal(file.path, '/etc/cri/conf.d/20-customization.part')
  assert.equal(file.op, 'create')
  assert.equal(file.permissions, undefined, 'no permissions: 0o000 (that made the old patch unreadable)')
  const toml = parseToml(file.content) as any
  assert.equal(toml.plugins['io.containerd.cri.v1.images'].discard_unpacked_layers, false)
  assert.equal(toml.plugins['io.containerd.grpc.v1.cri'], undefined, 'the containerd 1.x table is ignored by containerd 2')
}

describe('talos-patches', () => {
  it('spegel-machine-patch.yaml writes discard_unpacked_layers = false to /etc/cri/conf.d/20-customization.part', () => {
    const patch = yamlOf('spegel-machine-patch.yaml')
    assert.deepEqual(Object.keys(patch), ['machine'])
    assert.equal(patch.machine.files.length, 1)
    assertKeepsLayers(patch.machine.files[0])
  })

  it('omni-cluster-template-patch.yaml carries the same file as an inline patch named spegel-containerd-config', () => {
    const patch = yamlOf('omni-cluster-template-patch.yaml')
    assert.equal(patch.patches.length, 1)
    assert.equal(patch.patches[0].name, 'spegel-containerd-config')
    const files = patch.patches[0].inline.machine.files
    assert.equal(files.length, 1)
    assertKeepsLayers(files[0])
    assert.deepEqual(files[0], yamlOf('spegel-machine-patch.yaml').machine.files[0])
  })

  it('no patch file uses the broken /var/etc path or permissions 0o000', () => {
    for (const f of ['spegel-machine-patch.yaml', 'omni-cluster-template-patch.yaml']) {
      const body = text(f).split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n')
      assert.doesNotMatch(body, /\/var\/etc\/cri/, f)
      assert.doesNotMatch(body, /permissions:\s*0o?0+\b/, f)
    }
  })

  it('the checks reject the old Sidero guide patch (self-check)', () => {
    const old = parseYaml([
      'machine:', '  files:', '    - path: /var/etc/cri/conf.d/20-spegel.part', '      op: create', '      permissions: 0o000',
      '      content: |', '        [plugins."io.containerd.cri.v1.images"]', '          discard_unpacked_layers = false', '',
    ].join('\n')) as any
    assert.throws(() => assertKeepsLayers(old.machine.files[0]))
    assert.throws(() => assertKeepsLayers({ ...old.machine.files[0], path: '/etc/cri/conf.d/20-customization.part' }), /permissions/)
    assert.throws(() => assertKeepsLayers({ path: '/etc/cri/conf.d/20-customization.part', op: 'create', content: '[plugins."io.containerd.grpc.v1.cri".containerd]\ndiscard_unpacked_layers = false\n' }))
  })

  it('namespace.yaml is the spegel Namespace labelled privileged for Pod Security Admission', () => {
    const ns = yamlOf('namespace.yaml')
    assert.equal(ns.apiVersion, 'v1')
    assert.equal(ns.kind, 'Namespace')
    assert.equal(ns.metadata.name, 'spegel')
    for (const mode of ['enforce', 'audit', 'warn']) assert.equal(ns.metadata.labels[`pod-security.kubernetes.io/${mode}`], 'privileged', mode)
  })

  it('spegel-values.yaml sets the Talos registry config path and matches the chart schema', () => {
    const values = yamlOf('spegel-values.yaml') as Values
    assert.deepEqual(values, { spegel: { containerdRegistryConfigPath: '/etc/cri/conf.d/hosts' } })
    assert.deepEqual(validate(schema, values), [])
    assert.deepEqual(validate(schema, mergeValues(chartValues(), values)), [])
    const r = renderChart({ values })
    const ds = r.objects.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'spegel') as Record<string, any>
    assert.ok(ds.spec.template.spec.initContainers[0].args.includes('--containerd-registry-config-path=/etc/cri/conf.d/hosts'))
  })

  it('the README explains each file and why the old /var/etc path with permissions 0o000 fails', () => {
    const readme = text('README.md')
    for (const f of ['spegel-machine-patch.yaml', 'omni-cluster-template-patch.yaml', 'namespace.yaml', 'spegel-values.yaml']) assert.ok(readme.includes(f), f)
    assert.match(readme, /\/var\/etc\/cri\/conf\.d\/20-spegel\.part/)
    assert.match(readme, /permissions: 0o000/)
    assert.match(readme, /reboot/i)
  })
})

describe('docs/install-talos.md', () => {
  const guide = readFileSync(join(repoRoot, 'docs/install-talos.md'), 'utf8')
  const blocks = [...guide.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1] as string, body: m[2] as string }))

  it('every YAML block in the guide parses; values blocks validate against the chart schema', () => {
    const yamlBlocks = blocks.filter((b) => b.lang === 'yaml')
    assert.ok(yamlBlocks.length >= 3)
    let valuesBlocks = 0
    for (const b of yamlBlocks) {
      const docs = parseYaml(b.body) as any
      if (docs !== null && typeof docs === 'object' && 'spegel' in docs) {
        valuesBlocks++
        assert.deepEqual(validate(schema, docs), [], b.body)
      }
      if (docs?.machine?.files !== undefined) for (const f of docs.machine.files) assertKeepsLayers(f)
      if (docs?.patches !== undefined) for (const p of docs.patches) for (const f of p.inline.machine.files) assertKeepsLayers(f)
    }
    assert.ok(valuesBlocks >= 1, 'the guide shows the Talos values file')
  })

  it('every TOML block in the guide parses and sets config_path', () => {
    const tomlBlocks = blocks.filter((b) => b.lang === 'toml')
    assert.ok(tomlBlocks.length >= 2)
    for (const b of tomlBlocks) {
      const toml = parseToml(b.body) as any
      const registry = toml.plugins['io.containerd.cri.v1.images']?.registry ?? toml.plugins['io.containerd.grpc.v1.cri']?.registry
      assert.equal(registry.config_path, '/etc/containerd/certs.d', b.body)
    }
  })

  it('walks through patch, reboot, values, helm install, namespace label, pods, test pull, logs, debug page and metrics', () => {
    for (const step of [/talosctl patch machineconfig/, /talosctl reboot/, /omnictl cluster template sync/, /containerdRegistryConfigPath: \/etc\/cri\/conf\.d\/hosts/,
      /helm upgrade\s+(\\\n\s*)?--install spegel/, /pod-security\.kubernetes\.io\/enforce=privileged/, /kubectl get pods -n spegel -o wide/,
      /--image-pull-policy=Always/, /kubectl logs -n spegel/, /\/debug\/web\//, /spegel_mirror_requests_total/, /config_path/, /discard_unpacked_layers = false/]) {
      assert.match(guide, step)
    }
    assert.doesNotMatch(guide.replace(/<!-- old -->[\s\S]*?<!-- \/old -->/g, ''), /\/var\/etc\/cri/, 'the broken path appears only in the marked warning')
  })
})
