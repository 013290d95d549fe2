import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseCommandLine } from '../../../src/cli/args.ts'
import type { ParsedCommand } from '../../../src/cli/args.ts'
import { commands, globalFlags } from '../../../src/cli/spec.ts'
import { chartDir, chartValues, findObject, readYaml, renderChart, repoRoot, templateFiles } from './chart.ts'
import type { Rendered, Values } from './chart.ts'
import { TemplateFailError, tokenize } from './gotemplate.ts'

const templateText = (f: string): string => readFileSync(join(chartDir, 'templates', f), 'utf8')

function hasPath (values: unknown, path: string[]): boolean {
  let v: unknown = values
  for (const p of path) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, p)) return false
    v = (v as Record<string, unknown>)[p]
  }
  return true
}

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

  it('balances {{ }} delimiters and closes every if/range/with/define with end', () => {
    for (const f of templateFiles()) {
      const text = templateText(f)
      assert.equal(text.split('{{').length, text.split('}}').length, `${f}: unbalanced {{ and }}`)
      const stack: string[] = []
      for (const token of tokenize(text, f)) {
        if (token.kind !== 'action') continue
        const body = token.action.body
        const word = /^(if|range|with|define|block|else|end)\b/.exec(body)?.[1]
        if (word === 'if' || word === 'range' || word === 'with' || word === 'define' || word === 'block') stack.push(`${word}@${token.action.line}`)
        else if (word === 'else') assert.ok(stack.length > 0, `${f}:${token.action.line}: else outside a block`)
        else if (word === 'end') assert.ok(stack.pop() !== undefined, `${f}:${token.action.line}: end without a block`)
      }
      assert.deepEqual(stack, [], `${f}: blocks not closed`)
    }
  })
})

const NODE_IP = '10.1.2.3'
/** Kubernetes expands $(VAR) in args from the container's env before the process sees them. */
function expand (args: string[], env: Record<string, string>): string[] {
  return args.map((a) => a.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole))
}

function containerArgs (container: Record<string, any>): string[] {
  const args = container.args as unknown
  assert.ok(Array.isArray(args) && args.every((a) => typeof a === 'string'), `${container.name}: args must be a list of strings`)
  return args as string[]
}

/** Feeds a container's args to our CLI parser the way the image's entrypoint does. */
function parseContainer (container: Record<string, any>, expected: string): ParsedCommand {
  const args = expand(containerArgs(container), { NODE_IP })
  const parsed = parseCommandLine(args, {}, commands, globalFlags)
  assert.equal(parsed.command, expected)
  return parsed
}

function daemonSet (r: Rendered): Record<string, any> {
  return findObject(r, 'DaemonSet', 'spegel')
}

function podSpec (r: Rendered): Record<string, any> {
  return daemonSet(r).spec.template.spec
}

function container (r: Rendered, name: string): Record<string, any> {
  const spec = podSpec(r)
  const c = [...(spec.initContainers ?? []), ...spec.containers].find((x: Record<string, any>) => x.name === name)
  assert.ok(c !== undefined, `no container ${name}`)
  return c
}

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

  it('renders the DaemonSet, three Services, the ServiceAccount and the post-delete hook, and nothing opt-in', () => {
    const names = r.objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()
    assert.deepEqual(names, [
      'DaemonSet/spegel', 'DaemonSet/spegel-cleanup', 'Pod/spegel-cleanup-wait', 'Service/spegel', 'Service/spegel-bootstrap',
      'Service/spegel-cleanup', 'Service/spegel-registry', 'ServiceAccount/spegel',
    ])
    for (const o of r.objects) assert.equal(o.metadata.namespace, 'spegel', `${o.kind}/${o.metadata.name}`)
  })

  it('DaemonSet: one configuration init container and one registry container from our image', () => {
    const ds = daemonSet(r)
    assert.equal(ds.apiVersion, 'apps/v1')
    assert.equal(ds.metadata.labels['app.kubernetes.io/component'], 'spegel')
    assert.deepEqual(ds.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'spegel', 'app.kubernetes.io/instance': 'spegel' })
    const spec = podSpec(r)
    assert.deepEqual(spec.initContainers.map((c: any) => c.name), ['configuration'])
    assert.deepEqual(spec.containers.map((c: any) => c.name), ['registry'])
    assert.equal(spec.containers[0].image, 'ghcr.io/spegel-ts/spegel:v0.0.1')
    assert.equal(spec.serviceAccountName, 'spegel')
    assert.equal(spec.priorityClassName, 'system-node-critical')
    assert.equal(spec.terminationGracePeriodSeconds, 30)
    assert.deepEqual(spec.nodeSelector, { 'kubernetes.io/os': 'linux' })
    assert.equal(spec.tolerations.length, 3)
    for (const c of [...spec.initContainers, ...spec.containers]) {
      assert.deepEqual(c.securityContext, { readOnlyRootFilesystem: true })
      assert.deepEqual(c.resources, { requests: { memory: '128Mi' }, limits: { memory: '128Mi' } })
      assert.deepEqual(c.env, [{ name: 'NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } }])
    }
  })

  it('registry container: TCP ports registry/router-tcp/metrics, no UDP, no hostPort; /readyz probes, no liveness', () => {
    const c = container(r, 'registry')
    assert.deepEqual(c.ports, [
      { name: 'registry', containerPort: 5000, protocol: 'TCP' },
      { name: 'router-tcp', containerPort: 5001, protocol: 'TCP' },
      { name: 'metrics', containerPort: 9090, protocol: 'TCP' },
    ])
    assert.deepEqual(c.startupProbe, { periodSeconds: 3, failureThreshold: 60, httpGet: { path: '/readyz', port: 'registry' } })
    assert.deepEqual(c.readinessProbe, { httpGet: { path: '/readyz', port: 'registry' } })
    assert.equal(c.livenessProbe, undefined)
  })

  it('mounts the containerd socket, the content store read-only, the config dir and the data dir from the host', () => {
    const volumes = Object.fromEntries(podSpec(r).volumes.map((v: any) => [v.name, v.hostPath]))
    assert.deepEqual(volumes, {
      'spegel-data': { path: '/var/lib/spegel', type: 'DirectoryOrCreate' },
      'containerd-sock': { path: '/run/containerd/containerd.sock', type: 'Socket' },
      'containerd-content': { path: '/var/lib/containerd/io.containerd.content.v1.content', type: 'Directory' },
      'containerd-config': { path: '/etc/containerd/certs.d', type: 'DirectoryOrCreate' },
    })
    assert.deepEqual(container(r, 'registry').volumeMounts, [
      { name: 'containerd-sock', mountPath: '/run/containerd/containerd.sock' },
      { name: 'containerd-content', mountPath: '/var/lib/containerd/io.containerd.content.v1.content', readOnly: true },
      { name: 'spegel-data', mountPath: '/var/lib/spegel' },
    ])
    assert.deepEqual(container(r, 'configuration').volumeMounts, [{ name: 'containerd-config', mountPath: '/etc/containerd/certs.d' }])
  })

  it('configuration args are accepted by our CLI and point containerd at the NodePort on this node', () => {
    const p = parseContainer(container(r, 'configuration'), 'configuration')
    assert.deepEqual(p.values.get('mirror-targets'), [`http://${NODE_IP}:30020`])
    assert.equal(p.values.get('containerd-registry-config-path'), '/etc/containerd/certs.d')
    assert.equal(p.values.get('resolve-tags'), true)
    assert.equal(p.values.get('prepend-existing'), false)
    assert.equal(p.values.get('log-level'), 'INFO')
    assert.equal(p.values.get('mirrored-registries'), undefined)
  })

  it('registry args are accepted by our CLI, with Spegel\'s values and DNS bootstrap through the headless service', () => {
    const p = parseContainer(container(r, 'registry'), 'registry')
    assert.equal(p.values.get('mirror-resolve-retries'), 3)
    assert.equal(p.values.get('mirror-resolve-timeout'), 20)
    // Spegel cuts transfers still running at the drain timeout and exits before the kubelet's SIGKILL.
    assert.equal(p.values.get('drain-timeout'), 20_000)
    assert.ok((p.values.get('drain-timeout') as number) + 5_000 <= podSpec(r).terminationGracePeriodSeconds * 1000)
    assert.equal(p.values.get('registry-addr'), ':5000')
    assert.equal(p.values.get('router-addr'), ':5001')
    assert.equal(p.values.get('metrics-addr'), ':9090')
    assert.equal(p.values.get('containerd-sock'), '/run/containerd/containerd.sock')
    assert.equal(p.values.get('containerd-namespace'), 'k8s.io')
    assert.equal(p.values.get('containerd-content-path'), '/var/lib/containerd/io.containerd.content.v1.content')
    assert.equal(p.values.get('bootstrap-kind'), 'dns')
    assert.equal(p.values.get('dns-bootstrap-domain'), 'spegel-bootstrap.spegel.svc.cluster.local.')
    assert.equal(p.values.get('debug-web-enabled'), true)
    assert.equal(p.values.get('data-dir'), '/var/lib/spegel')
    assert.ok(!containerArgs(container(r, 'registry')).some((a) => a.startsWith('--containerd-registry-config-path')))
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
    for (const s of [metrics, registry, bootstrap]) {
      assert.deepEqual(s.spec.selector, { 'app.kubernetes.io/name': 'spegel', 'app.kubernetes.io/instance': 'spegel' })
    }
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
    const cleanup = parseCommandLine(containerArgs(ds.spec.template.spec.containers[0]), {}, commands, globalFlags)
    assert.equal(cleanup.command, 'cleanup')
    assert.equal(cleanup.values.get('addr'), ':8080')
    assert.equal(cleanup.values.get('containerd-registry-config-path'), '/etc/containerd/certs.d')
    assert.deepEqual(ds.spec.template.spec.volumes, [{ name: 'containerd-config', hostPath: { path: '/etc/containerd/certs.d', type: 'DirectoryOrCreate' } }])
    assert.deepEqual(ds.spec.template.spec.containers[0].readinessProbe, { httpGet: { path: '/readyz', port: 'readiness' } })
    assert.equal(svc.spec.clusterIP, 'None')
    assert.equal(svc.spec.publishNotReadyAddresses, true)
    assert.deepEqual(svc.spec.selector, ds.spec.template.metadata.labels)
    const wait = parseCommandLine(containerArgs(pod.spec.containers[0]), {}, commands, globalFlags)
    assert.equal(wait.command, 'cleanup-wait')
    assert.equal(wait.values.get('probe-endpoint'), 'spegel-cleanup.spegel.svc.cluster.local.:8080')
    assert.equal(pod.spec.restartPolicy, 'Never')
  })

  it('NOTES.txt tells how to verify: pods per node, debug page, metrics', () => {
    const notes = r.text.get('NOTES.txt') ?? ''
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
    assert.deepEqual(pc.values.get('mirror-targets'), [`http://${NODE_IP}:30020`, 'https://zot.example.com', 'http://10.0.0.9:5000'])
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
    const volumes = podSpec(r).volumes.map((v: any) => v.name)
    assert.deepEqual(volumes, ['containerd-sock', 'containerd-config'])
  })

  it('Talos values: the configuration writes to /etc/cri/conf.d/hosts, mounted from the host', () => {
    const r = renderChart({ values: readYaml(join(repoRoot, 'talos-patches/spegel-values.yaml')) as Values })
    const p = parseContainer(container(r, 'configuration'), 'configuration')
    assert.equal(p.values.get('containerd-registry-config-path'), '/etc/cri/conf.d/hosts')
    const config = podSpec(r).volumes.find((v: any) => v.name === 'containerd-config')
    assert.deepEqual(config.hostPath, { path: '/etc/cri/conf.d/hosts', type: 'DirectoryOrCreate' })
    assert.deepEqual(container(r, 'configuration').volumeMounts, [{ name: 'containerd-config', mountPath: '/etc/cri/conf.d/hosts' }])
    const cleanup = findObject(r, 'DaemonSet', 'spegel-cleanup')
    assert.ok(containerArgs(cleanup.spec.template.spec.containers[0]).includes('--containerd-registry-config-path=/etc/cri/conf.d/hosts'))
    assert.equal(cleanup.spec.template.spec.volumes[0].hostPath.path, '/etc/cri/conf.d/hosts')
  })

  it('containerdMirrorAdd false: no configuration init container, no config mount, no post-delete hook', () => {
    const r = renderChart({ values: { spegel: { containerdMirrorAdd: false } } })
    assert.equal(podSpec(r).initContainers, undefined)
    assert.ok(!podSpec(r).volumes.some((v: any) => v.name === 'containerd-config'))
    assert.ok(!r.objects.some((o) => o.metadata.annotations?.['helm.sh/hook'] !== undefined))
  })

  it('extra init containers run before configuration; extra volumes are added', () => {
    const r = renderChart({ values: { extraInitContainers: [{ name: 'first', image: 'busybox' }], extraVolumes: [{ name: 'scratch', emptyDir: {} }] } })
    assert.deepEqual(podSpec(r).initContainers.map((c: any) => c.name), ['first', 'configuration'])
    assert.deepEqual(podSpec(r).volumes.at(-1), { name: 'scratch', emptyDir: {} })
  })

  it('basic auth: the secret is mounted read-only at /etc/secrets/basic-auth in both containers', () => {
    const r = renderChart({ values: { basicAuthSecretName: 'spegel-auth' } })
    assert.deepEqual(podSpec(r).volumes[0], { name: 'basic-auth', secret: { secretName: 'spegel-auth' } })
    for (const name of ['configuration', 'registry']) {
      assert.ok(container(r, name).volumeMounts.some((m: any) => m.name === 'basic-auth' && m.mountPath === '/etc/secrets/basic-auth' && m.readOnly === true), name)
    }
  })

  it('image: a digest wins over the tag; a tag wins over appVersion', () => {
    const digest = 'sha256:' + 'b'.repeat(64)
    assert.equal(container(renderChart({ values: { image: { digest, tag: 'v9' } } }), 'registry').image, `ghcr.io/spegel-ts/spegel@${digest}`)
    assert.equal(container(renderChart({ values: { image: { tag: 'v9', repository: 'r.example/spegel' } } }), 'registry').image, 'r.example/spegel:v9')
  })

  it('internalTrafficLocal: internalTrafficPolicy Local instead of PreferSameNode', () => {
    const svc = findObject(renderChart({ values: { service: { registry: { internalTrafficLocal: true } } } }), 'Service', 'spegel-registry')
    assert.equal(svc.spec.internalTrafficPolicy, 'Local')
    assert.equal(svc.spec.trafficDistribution, undefined)
  })

  it('liveness probe on /livez when enabled', () => {
    const c = container(renderChart({ values: { livenessProbe: { enabled: true } } }), 'registry')
    assert.deepEqual(c.livenessProbe, { httpGet: { path: '/livez', port: 'registry' } })
  })

  it('release and namespace names flow into resource names and the bootstrap domain', () => {
    const r = renderChart({ releaseName: 'mirror', namespace: 'kube-system', values: { namespaceOverride: 'spegel-system', clusterDomain: 'k8s.example.' } })
    const ds = findObject(r, 'DaemonSet', 'mirror-spegel')
    assert.equal(ds.metadata.namespace, 'spegel-system')
    const p = parseCommandLine(expand(containerArgs(ds.spec.template.spec.containers[0]), { NODE_IP }), {}, commands, globalFlags)
    assert.equal(p.values.get('dns-bootstrap-domain'), 'mirror-spegel-bootstrap.spegel-system.svc.k8s.example.')
    findObject(r, 'Service', 'mirror-spegel-bootstrap')
  })

  it('opt-in resources: ServiceMonitor, NetworkPolicy, Sidecar dashboard ConfigMap', () => {
    const r = renderChart({ values: { serviceMonitor: { enabled: true, labels: { release: 'prom' } }, networkPolicy: { enabled: true }, grafanaDashboard: { enabled: true, labels: { grafana_dashboard: '1' } } } })
    const sm = findObject(r, 'ServiceMonitor', 'spegel')
    assert.equal(sm.metadata.labels.release, 'prom')
    assert.equal(sm.spec.selector.matchLabels['app.kubernetes.io/component'], 'metrics')
    assert.deepEqual(sm.spec.endpoints, [{ port: 'metrics', interval: '60s', scrapeTimeout: '30s' }])
    const np = findObject(r, 'NetworkPolicy', 'spegel')
    assert.deepEqual(np.spec.ingress[0].ports, [{ port: 5001, protocol: 'TCP' }])
    assert.deepEqual(np.spec.ingress[1].ports, [{ port: 5000, protocol: 'TCP' }, { port: 9090, protocol: 'TCP' }])
    const cm = findObject(r, 'ConfigMap', 'spegel-dashboard')
    assert.equal(cm.metadata.labels.grafana_dashboard, '1')
    assert.equal(JSON.parse(cm.data['spegel.json']).uid, 'spegel-ts')
  })

  it('GrafanaOperator mode renders a GrafanaDashboard and needs matchLabels; other modes fail rendering', () => {
    const r = renderChart({ values: { grafanaDashboard: { enabled: true, mode: 'GrafanaOperator', grafanaOperator: { matchLabels: { dashboards: 'grafana' }, folder: 'Spegel' } } } })
    const gd = findObject(r, 'GrafanaDashboard', 'spegel')
    assert.deepEqual(gd.spec.instanceSelector, { matchLabels: { dashboards: 'grafana' } })
    assert.equal(gd.spec.allowCrossNamespaceImport, true)
    assert.equal(gd.spec.resyncPeriod, '10m')
    assert.equal(gd.spec.folder, 'Spegel')
    assert.equal(JSON.parse(gd.spec.json).title, 'Spegel stateless cluster local OCI registry mirror')
    assert.throws(() => renderChart({ values: { grafanaDashboard: { enabled: true, mode: 'GrafanaOperator' } } }),
      (e: unknown) => e instanceof TemplateFailError && /matchLabels is required/.test(e.message))
    assert.throws(() => renderChart({ values: { grafanaDashboard: { enabled: true, mode: 'Other' } } }),
      (e: unknown) => e instanceof TemplateFailError && /must be Sidecar or GrafanaOperator, got "Other"/.test(e.message))
  })

  it('VPA only when enabled and the autoscaling.k8s.io/v1 API exists', () => {
    const values = { verticalPodAutoscaler: { enabled: true, maxAllowed: { memory: '512Mi' } } }
    assert.ok(!renderChart({ values }).objects.some((o) => o.kind === 'VerticalPodAutoscaler'))
    const r = renderChart({ values, apiVersions: ['v1', 'apps/v1', 'autoscaling.k8s.io/v1'] })
    const vpa = findObject(r, 'VerticalPodAutoscaler', 'spegel')
    assert.deepEqual(vpa.spec.targetRef, { apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'spegel' })
    assert.equal(vpa.spec.resourcePolicy.containerPolicies[0].containerName, 'registry')
    assert.deepEqual(vpa.spec.resourcePolicy.containerPolicies[0].maxAllowed, { memory: '512Mi' })
    assert.deepEqual(vpa.spec.updatePolicy, { minReplicas: 2, updateMode: 'Auto' })
  })

  it('NOTES.txt names the keys of older Spegel charts that have no effect', () => {
    const r = renderChart({ values: { service: { registry: { hostPort: 30021 } }, spegel: { otel: { endpoint: 'x:4318' } } } })
    assert.match(r.text.get('NOTES.txt') ?? '', /no effect here and were ignored: service\.registry\.hostPort, spegel\.otel\./)
  })
})

describe('helm-unittest suites (run by .github/workflows/chart.yaml)', () => {
  it('exist for the DaemonSet, the services and the post-delete hook and parse as YAML', () => {
    for (const f of ['daemonset_test.yaml', 'service_test.yaml', 'post_delete_hook_test.yaml', 'optional_test.yaml']) {
      const path = join(chartDir, 'tests', f)
      assert.ok(existsSync(path), `missing chart/tests/${f}`)
      const suite = readYaml(path) as { suite: string, templates: string[], tests: unknown[] }
      assert.equal(typeof suite.suite, 'string')
      assert.ok(suite.templates.length > 0 && suite.tests.length > 0, f)
      for (const t of suite.templates) assert.ok(templateFiles().includes(t), `${f}: unknown template ${t}`)
    }
  })
})
