import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseCommandLine } from '../../../src/cli/args.ts'
import type { ParsedCommand } from '../../../src/cli/args.ts'
import { commands, globalFlags } from '../../../src/cli/spec.ts'
import { issueServingCertificate, readRegistryTls } from '../../../src/hosts/index.ts'
import { parseSwarmKey } from '../../../src/routing/psk.ts'
import { chartDir, chartValues, findObject, HelmError, lintChart, readYaml, renderChart, renderNotes, repoRoot, templateFiles } from './chart.ts'
import type { K8sObject, Rendered, RenderOptions, Values } from './chart.ts'

const templateText = (f: string): string => readFileSync(join(chartDir, 'templates', f), 'utf8')

function hasPath (values: unknown, path: string[]): boolean {
  let v: unknown = values
  for (const p of path) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, p)) return false
    v = (v as Record<string, unknown>)[p]
  }
  return true
}

/** The values files the chart is linted and rendered with; each must install (Spegel users' files unchanged). */
const valuesCases: Array<{ name: string, options: RenderOptions }> = [
  { name: 'default values', options: {} },
  { name: 'the Talos values file (talos-patches/spegel-values.yaml)', options: { valuesFiles: [join(repoRoot, 'talos-patches/spegel-values.yaml')] } },
  { name: 'a Spegel values file setting most keys (test/fixtures/chart/spegel-keys-values.yaml)', options: { valuesFiles: [join(repoRoot, 'test/fixtures/chart/spegel-keys-values.yaml')], releaseName: 'cache' } },
  {
    name: 'every opt-in resource on (test/fixtures/chart/optional-values.yaml)',
    options: { valuesFiles: [join(repoRoot, 'test/fixtures/chart/optional-values.yaml')], apiVersions: ['autoscaling.k8s.io/v1'] },
  },
]

describe('chart templates (static checks)', () => {
  it('has the templates of Spegel\'s chart', () => {
    for (const f of ['_helpers.tpl', 'daemonset.yaml', 'service.yaml', 'rbac.yaml', 'servicemonitor.yaml', 'grafana-dashboard.yaml',
      'networkpolicy.yaml', 'verticalpodautoscaler.yaml', 'post-delete-hook.yaml', 'NOTES.txt']) {
      assert.ok(templateFiles().includes(f), `missing templates/${f}`)
    }
  })

  it('uses only .Values paths that exist in values.yaml', () => {
    const values = chartValues()
    const missing: string[] = []
    for (const f of templateFiles()) {
      for (const m of templateText(f).matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
        const path = (m[1] as string).slice(1).split('.')
        if (!hasPath(values, path)) missing.push(`${f}: .Values.${path.join('.')}`)
      }
    }
    assert.deepEqual(missing, [])
  })
})

describe('helm lint', () => {
  for (const c of valuesCases) {
    it(`passes, also with --strict, with ${c.name}`, () => {
      assert.match(lintChart(c.options), /1 chart\(s\) linted, 0 chart\(s\) failed/)
      assert.match(lintChart({ ...c.options, strict: true }), /1 chart\(s\) linted, 0 chart\(s\) failed/)
    })
  }

  it('fails on a broken template (self-check: lint can fail)', () => {
    const copy = mkdtempSync(join(tmpdir(), 'spegel-chart-lint-'))
    try {
      cpSync(chartDir, copy, { recursive: true })
      writeFileSync(join(copy, 'templates', 'broken.yaml'), '{{- if .Values.spegel.logLevel }}\nkind: ConfigMap\n')
      assert.throws(() => lintChart({ chart: copy }), (e: unknown) => e instanceof HelmError && /broken\.yaml/.test(e.stdout + e.stderr))
    } finally {
      rmSync(copy, { recursive: true, force: true })
    }
  })
})

const nodeIp = '10.1.2.3'
/** Kubernetes expands $(VAR) in args from the container's env before the process sees them. */
function expand (args: string[], env: Record<string, string>): string[] {
  return args.map((a) => a.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole))
}

function containerArgs (container: K8sObject): string[] {
  const args = container.args as unknown
  assert.ok(Array.isArray(args) && args.every((a) => typeof a === 'string'), `${container.name}: args must be a list of strings`)
  return args as string[]
}

/** Feeds a container's args to our CLI parser the way the image's entrypoint does. */
function parseContainer (container: K8sObject, expected?: string): ParsedCommand {
  const parsed = parseCommandLine(expand(containerArgs(container), { NODE_IP: nodeIp }), {}, commands, globalFlags)
  if (expected !== undefined) assert.equal(parsed.command, expected)
  return parsed
}

function mainDaemonSet (r: Rendered): K8sObject {
  const ds = r.objects.filter((o) => o.kind === 'DaemonSet' && o.metadata.annotations?.['helm.sh/hook'] === undefined)
  assert.equal(ds.length, 1, 'exactly one DaemonSet outside the hooks')
  return ds[0] as K8sObject
}

function podSpec (r: Rendered): K8sObject {
  return mainDaemonSet(r).spec.template.spec
}

function container (r: Rendered, name: string): K8sObject {
  const spec = podSpec(r)
  const c = [...(spec.initContainers ?? []), ...spec.containers].find((x: K8sObject) => x.name === name)
  assert.ok(c !== undefined, `no container ${name}`)
  return c
}

/** Every container (init containers too) of every pod template and Pod the chart renders. */
function allContainers (r: Rendered): Array<{ owner: string, container: K8sObject }> {
  const out: Array<{ owner: string, container: K8sObject }> = []
  for (const o of r.objects) {
    const spec = o.kind === 'Pod' ? o.spec : o.spec?.template?.spec
    if (spec === undefined) continue
    for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) out.push({ owner: `${o.kind}/${o.metadata.name}`, container: c })
  }
  return out
}

function services (r: Rendered): K8sObject[] {
  return r.objects.filter((o) => o.kind === 'Service' && o.metadata.annotations?.['helm.sh/hook'] === undefined)
}

interface SpegelRelease { versions: string, upgradesInPlace: boolean, daemonSetSelector: Record<string, string>, serviceSelectors: Record<string, Record<string, string>> }
const spegelCharts = JSON.parse(readFileSync(join(repoRoot, 'test/fixtures/spegel-chart-selectors.json'), 'utf8')) as {
  release: { name: string, namespace: string }
  releases: SpegelRelease[]
  dashboardUid: string
}

/** Spegel's selector (v0.4.0 and later) for a release name and nameOverride: what an in-place upgrade must keep. */
function spegelSelector (releaseName: string, nameOverride: string): Record<string, string> {
  return { 'app.kubernetes.io/component': 'spegel', 'app.kubernetes.io/name': nameOverride || 'spegel', 'app.kubernetes.io/instance': releaseName }
}

describe('chart rendered by helm template with each values file', () => {
  for (const c of valuesCases) {
    describe(c.name, () => {
      const r = renderChart(c.options)
      const values = c.options.valuesFiles?.map((f) => readYaml(f) as Values).reduce((a, b) => ({ ...a, ...b }), {}) ?? {}
      const releaseName = c.options.releaseName ?? 'spegel'

      it('every container\'s args are accepted by our CLI parser', () => {
        const ours = allContainers(r).filter(({ container }) => /\/spegel[:@]/.test(container.image))
        assert.ok(ours.length >= 2)
        for (const { owner, container } of ours) {
          assert.doesNotThrow(() => parseContainer(container), `${owner} ${container.name}: ${containerArgs(container).join(' ')}`)
        }
        assert.equal(parseContainer(container(r, 'registry')).command, 'registry')
      })

      it('terminationGracePeriodSeconds 30 leaves the drain timeout 5 s or more before the SIGKILL', () => {
        assert.equal(podSpec(r).terminationGracePeriodSeconds, 30)
        const drain = parseContainer(container(r, 'registry'), 'registry').values.get('drain-timeout') as number
        assert.equal(drain, 20_000)
        assert.ok(drain + 5_000 <= podSpec(r).terminationGracePeriodSeconds * 1000)
      })

      it('the DaemonSet and every Service select the pods with the labels of Spegel\'s chart', () => {
        const selector = spegelSelector(releaseName, (values.nameOverride as string | undefined) ?? '')
        const ds = mainDaemonSet(r)
        assert.deepEqual(ds.spec.selector.matchLabels, selector)
        for (const [k, v] of Object.entries(selector)) assert.equal(ds.spec.template.metadata.labels[k], v, `pod template label ${k}`)
        const svcs = services(r)
        assert.equal(svcs.length, 3)
        for (const s of svcs) assert.deepEqual(s.spec.selector, selector, `Service ${s.metadata.name}`)
      })

      it('declares the ports of Spegel\'s chart: registry, router-tcp, router-quic (UDP), metrics; no hostPort', () => {
        const ports = container(r, 'registry').ports as K8sObject[]
        assert.deepEqual(ports.map((p) => `${p.name}:${p.protocol}`), ['registry:TCP', 'router-tcp:TCP', 'router-quic:UDP', 'metrics:TCP'])
        const router = ports.find((p) => p.name === 'router-tcp')
        assert.equal(ports.find((p) => p.name === 'router-quic')?.containerPort, router?.containerPort)
        assert.ok(ports.every((p) => p.hostPort === undefined))
        assert.equal(parseContainer(container(r, 'registry')).values.get('router-addr'), `:${String(router?.containerPort)}`)
      })
    })
  }
})

describe('helm upgrade from Spegel (test/fixtures/spegel-chart-selectors.json)', () => {
  const r = renderChart({ releaseName: spegelCharts.release.name, namespace: spegelCharts.release.namespace })
  const current = spegelCharts.releases.filter((x) => x.upgradesInPlace)
  const older = spegelCharts.releases.filter((x) => !x.upgradesInPlace)

  it('the fixture covers Spegel v0.4.0 and later, and the releases before', () => {
    assert.ok(current.some((x) => x.versions.startsWith('v0.4.0')), 'v0.4.0 and later')
    assert.ok(older.some((x) => x.versions.includes('v0.3')), 'before v0.4.0')
  })

  for (const spegel of current) {
    it(`the DaemonSet selector (immutable) and the Service selectors equal those of Spegel ${spegel.versions}`, () => {
      assert.deepEqual(mainDaemonSet(r).spec.selector.matchLabels, spegel.daemonSetSelector)
      for (const [name, selector] of Object.entries(spegel.serviceSelectors)) assert.deepEqual(findObject(r, 'Service', name).spec.selector, selector, name)
      assert.deepEqual(services(r).map((s) => s.metadata.name).sort(), Object.keys(spegel.serviceSelectors).sort())
    })
  }

  for (const spegel of older) {
    it(`differs from Spegel ${spegel.versions} (no in-place upgrade: the README says what to do)`, () => {
      assert.notDeepEqual(mainDaemonSet(r).spec.selector.matchLabels, spegel.daemonSetSelector)
      const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
      const upgrade = /^## Upgrading from Spegel\n([\s\S]*?)(?=^## )/m.exec(readme)?.[1]
      assert.ok(upgrade !== undefined, 'README.md has a section "## Upgrading from Spegel"')
      for (const text of ['v0.4.0', 'helm uninstall', '--cascade=orphan']) assert.ok(upgrade.includes(text), `the upgrade section mentions ${text}`)
    })
  }

  it('the Grafana dashboard keeps the uid of Spegel\'s, so it replaces Spegel\'s dashboard instead of adding a second one', () => {
    const dashboard = JSON.parse(readFileSync(join(chartDir, 'monitoring/grafana-dashboard.json'), 'utf8')) as { uid: string }
    assert.equal(dashboard.uid, spegelCharts.dashboardUid)
  })
})

describe('the assertions of Spegel\'s own chart tests (charts/spegel/tests/daemonset_test.yaml), but our image', () => {
  // helm-unittest renders with release RELEASE-NAME in namespace NAMESPACE; helm itself wants DNS names.
  const r = renderChart({ releaseName: 'release-name', namespace: 'namespace' })
  const ds = mainDaemonSet(r)
  const spec = ds.spec.template.spec

  it('renders a DaemonSet apps/v1 named <release>-spegel in the release namespace', () => {
    assert.equal(ds.apiVersion, 'apps/v1')
    assert.equal(ds.kind, 'DaemonSet')
    assert.equal(ds.metadata.name, 'release-name-spegel')
    assert.equal(ds.metadata.namespace, 'namespace')
  })

  it('one init container and one container named registry, from our image', () => {
    assert.equal(spec.initContainers.length, 1)
    assert.equal(spec.containers.length, 1)
    assert.match(spec.containers[0].image, /^ghcr\.io\/spegel-ts\/spegel/)
    assert.equal(spec.containers[0].name, 'registry')
  })

  it('port registry 5000/TCP, the containerd socket mounted from a Socket hostPath', () => {
    assert.ok(spec.containers[0].ports.some((p: K8sObject) => p.name === 'registry' && p.containerPort === 5000 && p.protocol === 'TCP'))
    assert.ok(spec.containers[0].volumeMounts.some((m: K8sObject) => m.name === 'containerd-sock' && m.mountPath === '/run/containerd/containerd.sock'))
    assert.ok(spec.volumes.some((v: K8sObject) => v.name === 'containerd-sock' && v.hostPath?.path === '/run/containerd/containerd.sock' && v.hostPath?.type === 'Socket'))
  })

  it('priority class, node selector, 128Mi memory request and limit, probes, read-only root filesystem', () => {
    assert.equal(spec.priorityClassName, 'system-node-critical')
    assert.deepEqual(spec.nodeSelector, { 'kubernetes.io/os': 'linux' })
    assert.equal(spec.containers[0].resources.limits.memory, '128Mi')
    assert.equal(spec.containers[0].resources.requests.memory, '128Mi')
    assert.ok(Object.keys(spec.containers[0].readinessProbe ?? {}).length > 0)
    assert.ok(Object.keys(spec.containers[0].startupProbe ?? {}).length > 0)
    assert.equal(spec.containers[0].securityContext.readOnlyRootFilesystem, true)
  })
})

const fullValues: Values = {
  service: { registry: { nodeIp: '192.168.7.7' } },
  spegel: {
    logLevel: 'DEBUG',
    mirroredRegistries: ['https://docker.io', 'https://ghcr.io'],
    additionalMirrorTargets: ['https://zot.example.com', 'http://10.0.0.9:5000'],
    registryFilters: [':latest$', '^docker\\.io/library/'],
    mirrorResolveTimeout: '100ms',
    mirrorResolveRetries: 5,
    resolveTags: false,
    prependExisting: true,
    debugWebEnabled: false,
    containerdContentPath: '',
    persistence: { enabled: false },
  },
}

describe('chart rendered with default values', () => {
  const r = renderChart()

  it('renders the DaemonSet, three Services, the ServiceAccount, the router key Secret and the post-delete hook, and nothing opt-in', () => {
    const names = r.objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()
    assert.deepEqual(names, [
      'DaemonSet/spegel', 'DaemonSet/spegel-cleanup', 'Pod/spegel-cleanup-wait', 'Secret/spegel-router-psk', 'Service/spegel', 'Service/spegel-bootstrap',
      'Service/spegel-cleanup', 'Service/spegel-registry', 'ServiceAccount/spegel',
    ])
    for (const o of r.objects) assert.equal(o.metadata.namespace, 'spegel', `${o.kind}/${o.metadata.name}`)
  })

  it('DaemonSet: one configuration init container and one registry container from our image', () => {
    const ds = mainDaemonSet(r)
    assert.equal(ds.metadata.labels['app.kubernetes.io/component'], 'spegel')
    const spec = podSpec(r)
    assert.deepEqual(spec.initContainers.map((c: K8sObject) => c.name), ['configuration'])
    assert.deepEqual(spec.containers.map((c: K8sObject) => c.name), ['registry'])
    assert.equal(spec.containers[0].image, 'ghcr.io/spegel-ts/spegel:v0.0.1')
    assert.equal(spec.serviceAccountName, 'spegel')
    assert.equal(spec.tolerations.length, 3)
    for (const c of [...spec.initContainers, ...spec.containers]) {
      assert.deepEqual(c.securityContext, { readOnlyRootFilesystem: true })
      assert.deepEqual(c.resources, { requests: { memory: '128Mi' }, limits: { memory: '128Mi' } })
      assert.deepEqual(c.env, [{ name: 'NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } }])
    }
  })

  it('registry container: /readyz startup and readiness probes, no liveness probe', () => {
    const c = container(r, 'registry')
    assert.deepEqual(c.ports, [
      { name: 'registry', containerPort: 5000, protocol: 'TCP' },
      { name: 'router-tcp', containerPort: 5001, protocol: 'TCP' },
      { name: 'router-quic', containerPort: 5001, protocol: 'UDP' },
      { name: 'metrics', containerPort: 9090, protocol: 'TCP' },
    ])
    assert.deepEqual(c.startupProbe, { periodSeconds: 3, failureThreshold: 60, httpGet: { path: '/readyz', port: 'registry' } })
    assert.deepEqual(c.readinessProbe, { httpGet: { path: '/readyz', port: 'registry' } })
    assert.equal(c.livenessProbe, undefined)
  })

  it('mounts the containerd socket, the content store read-only, the config dir (read-only for the registry) and the data dir from the host', () => {
    const volumes = Object.fromEntries(podSpec(r).volumes.filter((v: K8sObject) => v.hostPath !== undefined).map((v: K8sObject) => [v.name, v.hostPath]))
    assert.deepEqual(volumes, {
      'spegel-data': { path: '/var/lib/spegel', type: 'DirectoryOrCreate' },
      'containerd-sock': { path: '/run/containerd/containerd.sock', type: 'Socket' },
      'containerd-content': { path: '/var/lib/containerd/io.containerd.content.v1.content', type: 'DirectoryOrCreate' },
      'containerd-config': { path: '/etc/containerd/certs.d', type: 'DirectoryOrCreate' },
    })
    assert.deepEqual(container(r, 'registry').volumeMounts, [
      { name: 'router-psk', mountPath: '/etc/secrets/router-psk', readOnly: true },
      { name: 'containerd-sock', mountPath: '/run/containerd/containerd.sock' },
      { name: 'containerd-config', mountPath: '/etc/containerd/certs.d', readOnly: true },
      { name: 'containerd-content', mountPath: '/var/lib/containerd/io.containerd.content.v1.content', readOnly: true },
      { name: 'spegel-data', mountPath: '/var/lib/spegel' },
    ])
    assert.deepEqual(container(r, 'configuration').volumeMounts, [{ name: 'containerd-config', mountPath: '/etc/containerd/certs.d' }])
  })

  it('configuration args point containerd at the NodePort on this node', () => {
    const p = parseContainer(container(r, 'configuration'), 'configuration')
    assert.deepEqual(p.values.get('mirror-targets'), [`http://${nodeIp}:30020`])
    assert.equal(p.values.get('containerd-registry-config-path'), '/etc/containerd/certs.d')
    assert.equal(p.values.get('resolve-tags'), true)
    assert.equal(p.values.get('prepend-existing'), false)
    assert.equal(p.values.get('log-level'), 'INFO')
    assert.equal(p.values.get('mirrored-registries'), undefined)
  })

  it('registry args carry Spegel\'s values and DNS bootstrap through the headless service', () => {
    const p = parseContainer(container(r, 'registry'), 'registry')
    assert.equal(p.values.get('mirror-resolve-retries'), 3)
    assert.equal(p.values.get('mirror-resolve-timeout'), 20)
    assert.equal(p.values.get('registry-addr'), ':5000')
    assert.equal(p.values.get('router-addr'), ':5001')
    assert.equal(p.values.get('metrics-addr'), ':9090')
    assert.equal(p.values.get('containerd-sock'), '/run/containerd/containerd.sock')
    assert.equal(p.values.get('containerd-namespace'), 'k8s.io')
    // Read for tag confirmation (a private registry's CA) and the doctor.
    assert.equal(p.values.get('containerd-registry-config-path'), '/etc/containerd/certs.d')
    assert.equal(p.values.get('containerd-content-path'), '/var/lib/containerd/io.containerd.content.v1.content')
    assert.equal(p.values.get('bootstrap-kind'), 'dns')
    assert.equal(p.values.get('dns-bootstrap-domain'), 'spegel-bootstrap.spegel.svc.cluster.local.')
    assert.equal(p.values.get('debug-web-enabled'), true)
    assert.equal(p.values.get('data-dir'), '/var/lib/spegel')
  })

  it('services: metrics ClusterIP, registry NodePort 30020 preferring the same node, headless bootstrap', () => {
    const metrics = findObject(r, 'Service', 'spegel')
    assert.equal(metrics.spec.type, 'ClusterIP')
    assert.equal(metrics.metadata.labels['app.kubernetes.io/component'], 'metrics')
    assert.deepEqual(metrics.spec.ports, [{ name: 'metrics', port: 9090, targetPort: 'metrics', protocol: 'TCP' }])
    const registry = findObject(r, 'Service', 'spegel-registry')
    assert.equal(registry.spec.type, 'NodePort')
    assert.equal(registry.spec.trafficDistribution, 'PreferSameNode')
    assert.equal(registry.spec.internalTrafficPolicy, undefined)
    assert.deepEqual(registry.spec.ports, [{ name: 'registry', port: 5000, targetPort: 'registry', nodePort: 30020, protocol: 'TCP' }])
    const bootstrap = findObject(r, 'Service', 'spegel-bootstrap')
    assert.equal(bootstrap.spec.clusterIP, 'None')
    assert.equal(bootstrap.spec.publishNotReadyAddresses, true)
    assert.equal(bootstrap.spec.ports, undefined)
  })

  it('post-delete hook: cleanup DaemonSet, headless Service and cleanup-wait Pod, with args our CLI accepts', () => {
    const ds = findObject(r, 'DaemonSet', 'spegel-cleanup')
    const svc = findObject(r, 'Service', 'spegel-cleanup')
    const pod = findObject(r, 'Pod', 'spegel-cleanup-wait')
    for (const o of [ds, svc, pod]) {
      assert.equal(o.metadata.annotations['helm.sh/hook'], 'post-delete')
      assert.equal(o.metadata.annotations['helm.sh/hook-delete-policy'], 'before-hook-creation, hook-succeeded')
    }
    assert.equal(ds.metadata.annotations['helm.sh/hook-weight'], '0')
    assert.equal(pod.metadata.annotations['helm.sh/hook-weight'], '1')
    // Spegel's cleanup selector: component cleanup with name and instance.
    assert.deepEqual(ds.spec.selector.matchLabels, { 'app.kubernetes.io/component': 'cleanup', 'app.kubernetes.io/name': 'spegel', 'app.kubernetes.io/instance': 'spegel' })
    const cleanup = parseContainer(ds.spec.template.spec.containers[0], 'cleanup')
    assert.equal(cleanup.values.get('addr'), ':8080')
    assert.equal(cleanup.values.get('containerd-registry-config-path'), '/etc/containerd/certs.d')
    assert.deepEqual(ds.spec.template.spec.volumes, [{ name: 'containerd-config', hostPath: { path: '/etc/containerd/certs.d', type: 'DirectoryOrCreate' } }])
    assert.deepEqual(ds.spec.template.spec.containers[0].readinessProbe, { httpGet: { path: '/readyz', port: 'readiness' } })
    assert.equal(svc.spec.clusterIP, 'None')
    assert.equal(svc.spec.publishNotReadyAddresses, true)
    assert.deepEqual(svc.spec.selector, ds.spec.template.metadata.labels)
    const wait = parseContainer(pod.spec.containers[0], 'cleanup-wait')
    assert.equal(wait.values.get('probe-endpoint'), 'spegel-cleanup.spegel.svc.cluster.local.:8080')
    assert.equal(pod.spec.restartPolicy, 'Never')
  })

  it('post-delete hook: the cleanup DaemonSet and the cleanup-wait Pod take podSecurityContext, as the DaemonSet does', () => {
    const podSecurityContext = { runAsNonRoot: false, seccompProfile: { type: 'RuntimeDefault' } }
    const withContext = renderChart({ values: { podSecurityContext } })
    assert.deepEqual(findObject(withContext, 'DaemonSet', 'spegel').spec.template.spec.securityContext, podSecurityContext)
    assert.deepEqual(findObject(withContext, 'DaemonSet', 'spegel-cleanup').spec.template.spec.securityContext, podSecurityContext)
    assert.deepEqual(findObject(withContext, 'Pod', 'spegel-cleanup-wait').spec.securityContext, podSecurityContext)
    assert.equal(findObject(r, 'Pod', 'spegel-cleanup-wait').spec.securityContext, undefined, 'none by default ({}), as Spegel\'s chart')
  })

  it('NOTES.txt tells how to verify: pods per node, debug page, metrics', () => {
    const notes = renderNotes()
    assert.match(notes, /kubectl get daemonset,pods -n spegel/)
    assert.match(notes, /port-forward .* 9090:9090/)
    assert.match(notes, /http:\/\/localhost:9090\/debug\/web\//)
    assert.match(notes, /spegel_mirror_requests_total/)
    assert.match(notes, /pod-security\.kubernetes\.io\/enforce=privileged/)
    assert.doesNotMatch(notes, /no effect here/)
  })
})

describe('chart rendered with non-default values', () => {
  it('passes lists, filters, extra targets, a fixed node IP and disabled options as args our CLI accepts', () => {
    const r = renderChart({ values: fullValues })
    const conf = container(r, 'configuration')
    assert.deepEqual(conf.env, [{ name: 'NODE_IP', value: '192.168.7.7' }])
    const pc = parseContainer(conf, 'configuration')
    assert.deepEqual(pc.values.get('mirrored-registries'), ['https://docker.io', 'https://ghcr.io'])
    assert.deepEqual(pc.values.get('mirror-targets'), [`http://${nodeIp}:30020`, 'https://zot.example.com', 'http://10.0.0.9:5000'])
    assert.equal(pc.values.get('resolve-tags'), false)
    assert.equal(pc.values.get('prepend-existing'), true)
    assert.equal(pc.values.get('log-level'), 'DEBUG')
    const reg = container(r, 'registry')
    const pr = parseContainer(reg, 'registry')
    assert.deepEqual(pr.values.get('mirrored-registries'), ['https://docker.io', 'https://ghcr.io'])
    assert.deepEqual(pr.values.get('registry-filters'), [':latest$', '^docker\\.io/library/'])
    assert.equal(pr.values.get('mirror-resolve-timeout'), 100)
    assert.equal(pr.values.get('mirror-resolve-retries'), 5)
    assert.equal(pr.values.get('debug-web-enabled'), false)
    assert.equal(pr.values.get('data-dir'), '', 'no --data-dir: the CLI default (no persistence)')
    assert.ok(!containerArgs(reg).some((a) => a.startsWith('--containerd-content-path')))
    assert.deepEqual(podSpec(r).volumes.map((v: K8sObject) => v.name), ['router-psk', 'containerd-sock', 'containerd-config'])
  })

  it('a Spegel values file setting most keys: names, ports, paths and lists reach the objects and the args', () => {
    const r = renderChart({ releaseName: 'cache', valuesFiles: [join(repoRoot, 'test/fixtures/chart/spegel-keys-values.yaml')] })
    const ds = findObject(r, 'DaemonSet', 'cache-mirror')
    assert.equal(ds.metadata.namespace, 'spegel-system')
    assert.equal(ds.metadata.annotations['example.com/owner'], 'platform')
    assert.equal(ds.spec.revisionHistoryLimit, 3)
    assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } })
    assert.equal(ds.spec.template.metadata.labels.team, 'platform')
    assert.equal(ds.spec.template.metadata.annotations['example.com/scrape'], 'true')
    const spec = ds.spec.template.spec
    assert.equal(spec.serviceAccountName, 'spegel-sa')
    assert.equal(spec.priorityClassName, 'system-cluster-critical')
    assert.deepEqual(spec.imagePullSecrets, [{ name: 'regcred' }])
    assert.deepEqual(spec.securityContext, { fsGroup: 2000 })
    assert.deepEqual(spec.initContainers.map((c: K8sObject) => c.name), ['wait', 'configuration'])
    assert.equal(spec.containers[0].image, 'ghcr.io/spegel-ts/spegel:v0.7.4')
    assert.equal(spec.containers[0].imagePullPolicy, 'Always')
    assert.deepEqual(spec.containers[0].livenessProbe, { httpGet: { path: '/livez', port: 'registry' } })
    const reg = parseContainer(spec.containers[0], 'registry')
    assert.equal(reg.values.get('registry-addr'), ':5050')
    assert.equal(reg.values.get('router-addr'), ':5011')
    assert.equal(reg.values.get('metrics-addr'), ':9099')
    assert.equal(reg.values.get('mirror-resolve-timeout'), 1500)
    assert.equal(reg.values.get('containerd-sock'), '/run/k3s/containerd/containerd.sock')
    assert.equal(reg.values.get('dns-bootstrap-domain'), 'cache-mirror-bootstrap.spegel-system.svc.k8s.example.')
    assert.equal(reg.values.get('data-dir'), '/data')
    const conf = parseContainer(spec.initContainers[1], 'configuration')
    assert.deepEqual(conf.values.get('mirror-targets'), [`http://${nodeIp}:30040`, 'https://zot.example.com'])
    assert.equal(conf.values.get('containerd-registry-config-path'), '/var/lib/rancher/k3s/agent/etc/containerd/certs.d')
    const registry = findObject(r, 'Service', 'cache-mirror-registry')
    assert.equal(registry.spec.internalTrafficPolicy, 'Local')
    assert.deepEqual(registry.spec.ports, [{ name: 'registry', port: 5050, targetPort: 'registry', nodePort: 30040, protocol: 'TCP' }])
    const wait = parseContainer(findObject(r, 'Pod', 'cache-mirror-cleanup-wait').spec.containers[0], 'cleanup-wait')
    assert.equal(wait.values.get('probe-endpoint'), 'cache-mirror-cleanup.spegel-system.svc.k8s.example.:8088')
  })

  it('Talos values: the configuration writes to /etc/cri/conf.d/hosts, mounted from the host', () => {
    const r = renderChart({ valuesFiles: [join(repoRoot, 'talos-patches/spegel-values.yaml')] })
    const p = parseContainer(container(r, 'configuration'), 'configuration')
    assert.equal(p.values.get('containerd-registry-config-path'), '/etc/cri/conf.d/hosts')
    const config = podSpec(r).volumes.find((v: K8sObject) => v.name === 'containerd-config')
    assert.deepEqual(config.hostPath, { path: '/etc/cri/conf.d/hosts', type: 'DirectoryOrCreate' })
    assert.deepEqual(container(r, 'configuration').volumeMounts, [{ name: 'containerd-config', mountPath: '/etc/cri/conf.d/hosts' }])
    const cleanup = findObject(r, 'DaemonSet', 'spegel-cleanup')
    assert.ok(containerArgs(cleanup.spec.template.spec.containers[0]).includes('--containerd-registry-config-path=/etc/cri/conf.d/hosts'))
    assert.equal(cleanup.spec.template.spec.volumes[0].hostPath.path, '/etc/cri/conf.d/hosts')
  })

  it('spegel.herdProtection: the daemon\'s default (on) passes nothing; false passes --herd-protection=false', () => {
    const flag = (r: Rendered): string | undefined => containerArgs(container(r, 'registry')).find((a) => a.startsWith('--herd-protection'))
    assert.equal(flag(renderChart()), undefined)
    assert.equal(flag(renderChart({ values: { spegel: { herdProtection: false } } })), '--herd-protection=false')
  })

  it('spegel.peerRedirect: off by default passes nothing; true passes --peer-redirect=true', () => {
    const flag = (r: Rendered): string | undefined => containerArgs(container(r, 'registry')).find((a) => a.startsWith('--peer-redirect'))
    assert.equal(flag(renderChart()), undefined)
    assert.equal(flag(renderChart({ values: { spegel: { peerRedirect: true } } })), '--peer-redirect=true')
  })

  it('spegel.confirmTags: the daemon\'s default (on) passes nothing; false passes --confirm-tags=false', () => {
    const flag = (r: Rendered): string | undefined => containerArgs(container(r, 'registry')).find((a) => a.startsWith('--confirm-tags'))
    assert.equal(flag(renderChart()), undefined)
    assert.equal(flag(renderChart({ values: { spegel: { confirmTags: false } } })), '--confirm-tags=false')
  })

  it('spegel.routerPsk: a swarm key Secret of the chart\'s (new at each render without a cluster), or the user\'s, mounted and passed as --router-psk-file; off: neither', () => {
    const psk = (r: Rendered): { arg: string | undefined, mount: unknown, volume: unknown, secret: K8sObject | undefined } => ({
      arg: containerArgs(container(r, 'registry')).find((a) => a.startsWith('--router-psk-file')),
      mount: container(r, 'registry').volumeMounts.find((m: K8sObject) => m.name === 'router-psk'),
      volume: podSpec(r).volumes.find((v: K8sObject) => v.name === 'router-psk'),
      secret: r.objects.find((o) => o.kind === 'Secret'),
    })
    const keyOf = (secret: K8sObject | undefined): Buffer => Buffer.from(parseSwarmKey(Buffer.from(String(secret?.data?.['swarm.key']), 'base64')))
    const own = psk(renderChart())
    assert.equal(own.arg, '--router-psk-file=/etc/secrets/router-psk/swarm.key')
    assert.deepEqual(own.mount, { name: 'router-psk', mountPath: '/etc/secrets/router-psk', readOnly: true })
    assert.deepEqual(own.volume, { name: 'router-psk', secret: { secretName: 'spegel-router-psk' } })
    assert.equal(keyOf(own.secret).length, 32, 'the Secret holds a swarm key file the daemon reads')
    assert.notDeepEqual(keyOf(own.secret), keyOf(psk(renderChart()).secret), 'a fresh key per render without a cluster (helm lookup finds the installed one)')
    const theirs = psk(renderChart({ values: { spegel: { routerPsk: { existingSecret: 'my-swarm-key' } } } }))
    assert.equal(theirs.arg, '--router-psk-file=/etc/secrets/router-psk/swarm.key')
    assert.deepEqual(theirs.volume, { name: 'router-psk', secret: { secretName: 'my-swarm-key' } })
    assert.equal(theirs.secret, undefined, 'no Secret of the chart\'s')
    const off = psk(renderChart({ values: { spegel: { routerPsk: { enabled: false } } } }))
    assert.deepEqual(off, { arg: undefined, mount: undefined, volume: undefined, secret: undefined })
  })

  it('spegel.registryTls: off by default; on, a CA with its key and a client certificate in a Secret (or the user\'s), mounted in both containers, https:// in hosts.toml, the node IP for the serving certificate, HTTPS probes', async () => {
    const tlsOf = (r: Rendered): { registry: string[], configuration: string[], mounts: unknown[], volume: unknown, probes: unknown[], secret: K8sObject | undefined } => ({
      registry: containerArgs(container(r, 'registry')).filter((a) => a.startsWith('--registry-cert')),
      configuration: containerArgs(container(r, 'configuration')).filter((a) => a.startsWith('--registry-cert') || a.includes('$(NODE_IP)')),
      mounts: [container(r, 'registry'), container(r, 'configuration')].map((c) => (c.volumeMounts as K8sObject[]).find((m) => m.name === 'registry-tls')),
      volume: (podSpec(r).volumes as K8sObject[]).find((v) => v.name === 'registry-tls'),
      probes: ['startupProbe', 'readinessProbe', 'livenessProbe'].map((p) => container(r, 'registry')[p]?.httpGet?.scheme),
      secret: r.objects.find((o) => o.kind === 'Secret' && String(o.metadata?.name).endsWith('registry-tls')),
    })
    const off = tlsOf(renderChart())
    assert.deepEqual(off, { registry: [], configuration: ['http://$(NODE_IP):30020'], mounts: [undefined, undefined], volume: undefined, probes: [undefined, undefined, undefined], secret: undefined })
    const on = tlsOf(renderChart({ values: { spegel: { registryTls: { enabled: true } }, livenessProbe: { enabled: true } } }))
    assert.deepEqual(on.registry, ['--registry-cert-dir=/etc/secrets/registry-tls', '--registry-cert-ips=$(NODE_IP)'])
    assert.deepEqual(on.configuration, ['https://$(NODE_IP):30020', '--registry-cert-dir=/etc/secrets/registry-tls'])
    for (const m of on.mounts) assert.deepEqual(m, { name: 'registry-tls', mountPath: '/etc/secrets/registry-tls', readOnly: true })
    assert.deepEqual(on.volume, { name: 'registry-tls', secret: { secretName: 'spegel-registry-tls' } })
    assert.deepEqual(on.probes, ['HTTPS', 'HTTPS', 'HTTPS'])
    // The Secret's files are what the daemon reads: a CA with its key, and a certificate it signed.
    const dir = await mkdtemp(join(tmpdir(), 'spegel-chart-tls-'))
    try {
      for (const name of ['ca.crt', 'ca.key', 'tls.crt', 'tls.key']) await writeFile(join(dir, name), Buffer.from(String(on.secret?.data?.[name]), 'base64'))
      const tls = await readRegistryTls(dir)
      assert.ok(tls?.caKey !== undefined)
      const serving = issueServingCertificate({ cert: tls.ca, key: tls.caKey }, { ips: ['10.0.0.7'] })
      assert.ok(new X509Certificate(serving.cert).verify(new X509Certificate(tls.ca).publicKey))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    const theirs = tlsOf(renderChart({ values: { spegel: { registryTls: { enabled: true, existingSecret: 'my-registry-tls' } } } }))
    assert.deepEqual(theirs.volume, { name: 'registry-tls', secret: { secretName: 'my-registry-tls' } })
    assert.equal(theirs.secret, undefined, 'no Secret of the chart\'s')
  })

  it('spegel.dataDir (later Spegel charts\' name for spegel.persistence) overrides it key by key', () => {
    const dataDirOf = (r: Rendered): { arg: string | undefined, mount: unknown, hostPath: unknown } => ({
      arg: containerArgs(container(r, 'registry')).find((a) => a.startsWith('--data-dir=')),
      mount: (container(r, 'registry').volumeMounts as K8sObject[]).find((m) => m.name === 'spegel-data')?.mountPath,
      hostPath: (podSpec(r).volumes as K8sObject[]).find((v) => v.name === 'spegel-data')?.hostPath?.path,
    })
    assert.deepEqual(dataDirOf(renderChart({ values: { spegel: { dataDir: { path: '/data', hostPath: '/srv/spegel' } } } })), { arg: '--data-dir=/data', mount: '/data', hostPath: '/srv/spegel' })
    assert.deepEqual(dataDirOf(renderChart({ values: { spegel: { dataDir: { enabled: false } } } })), { arg: undefined, mount: undefined, hostPath: undefined })
    assert.deepEqual(dataDirOf(renderChart({ values: { spegel: { persistence: { hostPath: '/opt/spegel' } } } })), { arg: '--data-dir=/var/lib/spegel', mount: '/var/lib/spegel', hostPath: '/opt/spegel' })
  })

  it('containerdMirrorAdd false: no configuration init container, no post-delete hook; the config dir is only read', () => {
    const r = renderChart({ values: { spegel: { containerdMirrorAdd: false } } })
    assert.equal(podSpec(r).initContainers, undefined)
    assert.deepEqual(container(r, 'registry').volumeMounts.filter((m: K8sObject) => m.name === 'containerd-config'), [{ name: 'containerd-config', mountPath: '/etc/containerd/certs.d', readOnly: true }])
    assert.ok(!r.objects.some((o) => o.metadata.annotations?.['helm.sh/hook'] !== undefined))
  })

  it('extra init containers run before configuration; extra volumes are added', () => {
    const r = renderChart({ values: { extraInitContainers: [{ name: 'first', image: 'busybox' }], extraVolumes: [{ name: 'scratch', emptyDir: {} }] } })
    assert.deepEqual(podSpec(r).initContainers.map((c: K8sObject) => c.name), ['first', 'configuration'])
    assert.deepEqual(podSpec(r).volumes.at(-1), { name: 'scratch', emptyDir: {} })
  })

  it('image: a digest wins over the tag; a tag wins over appVersion', () => {
    const digest = 'sha256:' + 'b'.repeat(64)
    assert.equal(container(renderChart({ values: { image: { digest, tag: 'v9' } } }), 'registry').image, `ghcr.io/spegel-ts/spegel@${digest}`)
    assert.equal(container(renderChart({ values: { image: { tag: 'v9', repository: 'r.example/spegel' } } }), 'registry').image, 'r.example/spegel:v9')
  })

  it('NOTES.txt names the keys of older Spegel charts that have no effect', () => {
    const notes = renderNotes({ values: { service: { registry: { hostPort: 30021 } }, spegel: { otel: { endpoint: 'x:4318' } } } })
    assert.match(notes, /no effect here and were ignored: service\.registry\.hostPort, spegel\.otel\./)
  })
})

describe('opt-in resources (test/fixtures/chart/optional-values.yaml)', () => {
  const optional = join(repoRoot, 'test/fixtures/chart/optional-values.yaml')
  const r = renderChart({ valuesFiles: [optional], apiVersions: ['autoscaling.k8s.io/v1'] })

  it('ServiceMonitor: selects the metrics Service, with the interval, timeout and relabelings given', () => {
    const sm = findObject(r, 'ServiceMonitor', 'spegel')
    assert.equal(sm.metadata.labels.release, 'prometheus')
    const metrics = findObject(r, 'Service', 'spegel')
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels as Record<string, string>)) assert.equal(metrics.metadata.labels[k], v, k)
    assert.equal(sm.spec.selector.matchLabels['app.kubernetes.io/component'], 'metrics')
    assert.deepEqual(sm.spec.namespaceSelector, { matchNames: ['spegel'] })
    assert.equal(sm.spec.endpoints.length, 1)
    assert.equal(sm.spec.endpoints[0].port, 'metrics')
    assert.equal(sm.spec.endpoints[0].interval, '30s')
    assert.equal(sm.spec.endpoints[0].scrapeTimeout, '10s')
    assert.equal(sm.spec.endpoints[0].relabelings[0].targetLabel, 'node')
    assert.equal(sm.spec.endpoints[0].metricRelabelings[0].action, 'drop')
  })

  it('Sidecar dashboard ConfigMap with the labels and annotations given and the dashboard JSON', () => {
    const cm = findObject(r, 'ConfigMap', 'spegel-dashboard')
    assert.equal(cm.metadata.labels.grafana_dashboard, '1')
    assert.equal(cm.metadata.annotations.grafana_folder, 'Spegel')
    const dashboard = JSON.parse(cm.data['spegel.json'])
    assert.equal(dashboard.uid, spegelCharts.dashboardUid)
    assert.equal(dashboard.title, 'Spegel stateless cluster local OCI registry mirror')
  })

  it('VerticalPodAutoscaler for the registry container of the DaemonSet', () => {
    const vpa = findObject(r, 'VerticalPodAutoscaler', 'spegel')
    assert.deepEqual(vpa.spec.targetRef, { apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'spegel' })
    assert.deepEqual(vpa.spec.recommenders, [{ name: 'custom' }])
    assert.deepEqual(vpa.spec.resourcePolicy.containerPolicies, [{
      containerName: 'registry', controlledResources: ['memory'], controlledValues: 'RequestsOnly', maxAllowed: { memory: '512Mi' }, minAllowed: { memory: '64Mi' },
    }])
    assert.deepEqual(vpa.spec.updatePolicy, { minReplicas: 1, updateMode: 'Initial' })
  })

  it('no VPA when the cluster lacks the autoscaling.k8s.io/v1 API', () => {
    assert.ok(!renderChart({ valuesFiles: [optional] }).objects.some((o) => o.kind === 'VerticalPodAutoscaler'))
  })

  it('NetworkPolicy: the router port (TCP and UDP) only from Spegel pods, registry and metrics from anywhere', () => {
    const np = findObject(r, 'NetworkPolicy', 'spegel')
    const pods = { 'app.kubernetes.io/name': 'spegel', 'app.kubernetes.io/instance': 'spegel' }
    assert.deepEqual(np.spec.podSelector, { matchLabels: pods })
    assert.deepEqual(np.spec.ingress, [
      { from: [{ podSelector: { matchLabels: pods } }], ports: [{ port: 5001, protocol: 'TCP' }, { port: 5001, protocol: 'UDP' }] },
      { ports: [{ port: 5000, protocol: 'TCP' }, { port: 9090, protocol: 'TCP' }] },
    ])
  })

  it('basic auth: the secret is mounted read-only at /etc/secrets/basic-auth in both containers', () => {
    assert.deepEqual(podSpec(r).volumes[0], { name: 'basic-auth', secret: { secretName: 'spegel-auth' } })
    for (const name of ['configuration', 'registry']) {
      assert.ok(container(r, name).volumeMounts.some((m: K8sObject) => m.name === 'basic-auth' && m.mountPath === '/etc/secrets/basic-auth' && m.readOnly === true), name)
    }
  })

  it('GrafanaOperator mode renders a GrafanaDashboard and needs matchLabels; other modes fail rendering', () => {
    const op = renderChart({ values: { grafanaDashboard: { enabled: true, mode: 'GrafanaOperator', grafanaOperator: { matchLabels: { dashboards: 'grafana' }, folder: 'Spegel' } } } })
    const gd = findObject(op, 'GrafanaDashboard', 'spegel')
    assert.deepEqual(gd.spec.instanceSelector, { matchLabels: { dashboards: 'grafana' } })
    assert.equal(gd.spec.allowCrossNamespaceImport, true)
    assert.equal(gd.spec.resyncPeriod, '10m')
    assert.equal(gd.spec.folder, 'Spegel')
    assert.equal(JSON.parse(gd.spec.json).uid, spegelCharts.dashboardUid)
    assert.throws(() => renderChart({ values: { grafanaDashboard: { enabled: true, mode: 'GrafanaOperator' } } }),
      (e: unknown) => e instanceof HelmError && /matchLabels is required/.test(e.stderr))
    // The schema's enum rejects the mode before the template's fail; either way the message names the key.
    assert.throws(() => renderChart({ values: { grafanaDashboard: { enabled: true, mode: 'Other' } } }),
      (e: unknown) => e instanceof HelmError && /grafanaDashboard/.test(e.stderr) && /mode/.test(e.stderr))
  })

  it('internalTrafficLocal: internalTrafficPolicy Local instead of PreferSameNode', () => {
    const svc = findObject(renderChart({ values: { service: { registry: { internalTrafficLocal: true } } } }), 'Service', 'spegel-registry')
    assert.equal(svc.spec.internalTrafficPolicy, 'Local')
    assert.equal(svc.spec.trafficDistribution, undefined)
  })
})

describe('helm-unittest suites of the chart (chart/tests)', () => {
  const unittest = join(repoRoot, '.tools/bin/helm-unittest')
  const run = (chart: string): { ok: boolean, output: string } => {
    if (!existsSync(unittest)) throw new Error(`helm-unittest is not installed at ${unittest}: run \`bash .ci/setup.sh\` (or \`bash .ci/setup.d/10-helm.sh\`)`)
    try {
      return { ok: true, output: execFileSync(unittest, ['--color=false', chart], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) }
    } catch (e) {
      const err = e as { stdout?: string, stderr?: string, status?: number | null }
      if (typeof err.status !== 'number') throw e
      return { ok: false, output: `${err.stdout ?? ''}${err.stderr ?? ''}` }
    }
  }

  it('all pass', () => {
    const { ok, output } = run(chartDir)
    assert.ok(ok, output)
    assert.match(output, /Test Suites:\s+4 passed, 4 total/)
  })

  it('a wrong expectation fails (self-check)', () => {
    const copy = mkdtempSync(join(tmpdir(), 'spegel-chart-unittest-'))
    try {
      cpSync(chartDir, copy, { recursive: true })
      const suite = join(copy, 'tests', 'daemonset_test.yaml')
      const text = readFileSync(suite, 'utf8')
      assert.ok(text.includes('app.kubernetes.io/component: spegel'))
      writeFileSync(suite, text.replace('app.kubernetes.io/component: spegel', 'app.kubernetes.io/component: other'))
      const { ok, output } = run(copy)
      assert.ok(!ok, output)
      assert.match(output, /FAIL/)
    } finally {
      rmSync(copy, { recursive: true, force: true })
    }
  })
})
