// Issue 17: the chart installed for real. A 3-node Kubernetes (test/k8s/cluster.ts: upstream's components built from
// their Go modules, each node with its own network and mount namespaces and a Talos-shaped containerd 2.x carrying our
// Talos patch, and Pod Security Admission enforcing baseline as Talos does), the image built from the bundle the
// Dockerfile ships, talos-patches/namespace.yaml applied, and `helm install` with talos-patches/spegel-values.yaml plus
// only the image override. Every check is a Kubernetes action:
//   - the DaemonSet's pods become Ready on all 3 nodes through the chart's own probes;
//   - a Pod on node 1 pulls an image from the upstream; Pods on nodes 2 and 3 then pull it and the upstream serves
//     none of its blobs again;
//   - /metrics of each pod, reached through the metrics Service's endpoints, shows the hits and the bytes served;
//   - `helm upgrade` with a changed value rolls the pods while Pods pull, no pull fails, and the swarm key the chart
//     made at install is kept;
//   - with spegel.registryTls switched on by an upgrade, the pods pass their HTTPS probes, containerd pulls through
//     mutual TLS with the chart's client certificate (nodes 2 and 3 again take nothing from the upstream), a client
//     without it gets 401, and a further upgrade keeps the CA;
//   - `helm uninstall` runs the post-delete hook and every node's /etc/cri/conf.d/hosts is back as it was, byte for
//     byte.
// Run with `npm run test:k8s` (the README's test command runs it after `npm test`).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { lstat, readdir, readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { after, afterEach, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { testContainerd } from '../helpers/containerd.ts'
import { pushLayout, type ImageDescriptor, type PushedImage } from '../helpers/images.ts'
import { metricSum } from '../helpers/metrics.ts'
import { run } from '../helpers/process.ts'
import { prepareImageApp, type ImageApp } from '../helpers/spegel-cluster.ts'
import { requireRoot, requireTool } from '../helpers/tools.ts'
import { waitFor } from '../helpers/wait.ts'
import { startK8sCluster, type K8sCluster, type K8sNode } from './cluster.ts'
import { buildRootfsImage, busyboxEntries, type LayerEntry } from './rootfs-image.ts'

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))
const chartDir = join(repoRoot, 'chart')
const talosValues = join(repoRoot, 'talos-patches/spegel-values.yaml')
const machinePatch = join(repoRoot, 'talos-patches/spegel-machine-patch.yaml')
const namespace = 'spegel'
const hostsDir = '/etc/cri/conf.d/hosts'

interface TreeEntry { mode: number, bytes?: string, link?: string }

/** Every file, directory and link under `dir`: mode and content, for a byte-for-byte comparison. */
async function snapshot (dir: string): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {}
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const path = join(dir, rel, name)
      const key = join(rel, name)
      const st = await lstat(path)
      if (st.isSymbolicLink()) out[key] = { mode: st.mode, link: await readlink(path) }
      else if (st.isDirectory()) {
        out[key + '/'] = { mode: st.mode }
        await walk(key)
      } else out[key] = { mode: st.mode, bytes: (await readFile(path)).toString('base64') }
    }
  }
  await walk('')
  return out
}

/** The shared libraries a binary loads (ldd), as layer entries at the paths the loader looks for them. */
async function sharedLibraries (binary: string): Promise<LayerEntry[]> {
  const { stdout } = await run('ldd', [binary])
  const entries: LayerEntry[] = []
  for (const line of stdout.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line)
    if (m?.[1] !== undefined) entries.push({ path: m[1].slice(1), from: m[1], mode: 0o755 })
  }
  return entries
}

async function machineFiles (): Promise<Array<{ path: string, content: string }>> {
  const doc = parse(await readFile(machinePatch, 'utf8')) as { machine: { files: Array<{ path: string, content: string }> } }
  return doc.machine.files.map((f) => ({ path: f.path, content: f.content }))
}

describe('the chart on a real 3-node Kubernetes', { timeout: 30 * 60_000 }, () => {
  let cluster: K8sCluster | undefined
  let app: ImageApp | undefined
  const images: Record<string, PushedImage> = {}
  let hostsBefore: Array<Record<string, TreeEntry>> = []
  const cleanups: Array<() => Promise<void>> = []

  const k = (): K8sCluster => {
    assert.ok(cluster !== undefined, 'the cluster started')
    return cluster
  }
  const fail = async (message: string): Promise<never> => {
    const c = k()
    const pods = await c.kubectl(['get', 'pods', '-A', '-o', 'wide'], { allowNonZero: true })
    const events = await c.kubectl(['get', 'events', '-A', '--sort-by=.lastTimestamp'], { allowNonZero: true })
    const nodeLogs = (await Promise.all(c.nodes.map(async (n) => await n.logs()))).join('\n')
    assert.fail(`${message}\n--- pods\n${pods.stdout}\n--- events\n${events.stdout.split('\n').slice(-40).join('\n')}\n${nodeLogs}`)
  }

  before(async () => {
    requireRoot()
    requireTool('curl', 'apt-get install -y curl')
    requireTool('ldd', 'apt-get install -y libc-bin')
    const containerd = testContainerd()
    if (containerd.major < 2) throw new Error(`SPEGEL_TEST_CONTAINERD=${containerd.name}: the Kubernetes test runs containerd 2.x (what Talos ships)`)
    const busybox = requireTool('busybox', 'apt-get install -y busybox-static')

    // The image as the Dockerfile makes it: Node 24 at /nodejs/bin/node, the bundle at /app, its ENTRYPOINT and ENV.
    app = await prepareImageApp()
    const appDir = app.appDir
    const appFiles: LayerEntry[] = [{ path: 'app/package.json', from: join(appDir, 'package.json'), mode: 0o644 }]
    const walk = async (rel: string): Promise<void> => {
      for (const e of await readdir(join(appDir, rel), { withFileTypes: true })) {
        if (e.isDirectory()) await walk(join(rel, e.name))
        else appFiles.push({ path: join('app', rel, e.name), from: join(appDir, rel, e.name), mode: 0o644 })
      }
    }
    await walk('dist')
    const nodeBinary = process.execPath
    const spegelImage = await buildRootfsImage([
      [{ path: 'nodejs/bin/node', from: nodeBinary, mode: 0o755 }, ...await sharedLibraries(nodeBinary), { path: 'tmp/.keep', content: '' }],
      appFiles,
    ], { entrypoint: ['/nodejs/bin/node', ...app.nodeFlags, '/app/dist/spegel.mjs'], env: app.env, workingDir: '/app' }, 'test')
    cleanups.push(spegelImage.cleanup)
    const loop = ['/bin/sh', '-c', "trap 'exit 0' TERM; while true; do sleep 1; done"]
    const pauseImage = await buildRootfsImage([busyboxEntries(busybox)], { entrypoint: loop }, '1')
    cleanups.push(pauseImage.cleanup)
    const appImage = async (tag: string): Promise<Awaited<ReturnType<typeof buildRootfsImage>>> => {
      const random = (n: number): Buffer => randomBytes(n)
      const built = await buildRootfsImage([busyboxEntries(busybox), [{ path: `data/${tag}-a.bin`, content: random(6 << 20) }], [{ path: `data/${tag}-b.bin`, content: random(4 << 20) }]], { cmd: loop }, tag)
      cleanups.push(built.cleanup)
      return built
    }
    const appV1 = await appImage('v1')
    const appV2 = await appImage('v2')
    const appV3 = await appImage('v3')

    cluster = await startK8sCluster({
      containerd: containerd.binary,
      machineFiles: await machineFiles(),
      // What a Talos node has for a private registry before Spegel: its own hosts.toml and CA.
      hostsFiles: (up) => [
        { path: `${up.host}/hosts.toml`, content: `server = "https://${up.host}"\n\n[host."https://${up.host}"]\n  capabilities = ["pull", "resolve"]\n  ca = "${hostsDir}/${up.host}/ca.crt"\n` },
        { path: `${up.host}/ca.crt`, content: up.ca },
      ],
      pauseImage: async (upstream) => {
        images.pause = await pushLayout(pauseImage, upstream, 'k8s-test/pause', '1')
        images.spegel = await pushLayout(spegelImage, upstream, 'spegel-ts', 'test')
        images.v1 = await pushLayout(appV1, upstream, 'k8s-test/app', 'v1')
        images.v2 = await pushLayout(appV2, upstream, 'k8s-test/app', 'v2')
        images.v3 = await pushLayout(appV3, upstream, 'k8s-test/app', 'v3')
        return images.pause.ref
      },
    })
    hostsBefore = await Promise.all(cluster.nodes.map(async (n) => await snapshot(n.path(hostsDir))))
  })

  // A failed check shows what each node's Spegel said (its last lines), next to the assertion.
  // (`passed` is on every test context since Node 21; @types/node does not declare it yet.)
  afterEach(async (t) => {
    if ((t as { passed?: boolean }).passed !== false || cluster === undefined) return
    const c = cluster
    const pods = await c.kubectl(['get', 'pods', '-n', namespace, '-l', 'app.kubernetes.io/component=spegel', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{"\\n"}{end}'], { allowNonZero: true })
    for (const line of pods.stdout.split('\n').filter((l) => l.trim() !== '')) {
      const [pod, node] = line.split(' ')
      const logs = await c.kubectl(['logs', '-n', namespace, pod!, '-c', 'registry', '--tail', '80'], { allowNonZero: true })
      console.error(`--- the last log lines of ${pod} on ${node}, after "${t.name}" failed\n${logs.stdout}${logs.stderr}`)
    }
  })

  after(async () => {
    await cluster?.stop()
    for (const c of cleanups) await c().catch(() => {})
    await app?.cleanup()
  })

  const podJson = (name: string, node: K8sNode, image: string): string => JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { test: 'pull' } },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': node.name },
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'main', image, imagePullPolicy: 'IfNotPresent' }],
    },
  })
  const runPods = async (pods: Array<{ name: string, node: K8sNode, image: string }>): Promise<void> => {
    const c = k()
    for (const p of pods) await c.kubectl(['apply', '-f', '-'], { input: podJson(p.name, p.node, p.image) })
    for (const p of pods) {
      const res = await c.kubectl(['wait', '-n', 'default', '--for=condition=Ready', `pod/${p.name}`, '--timeout=180s'], { allowNonZero: true, timeoutMs: 200_000 })
      if (res.code !== 0) await fail(`pod ${p.name} on ${p.node.name} did not become Ready: ${res.stderr}`)
    }
  }
  /** Pull failures the kubelet reported for a pod (events Failed / ErrImagePull / BackOff). */
  const pullFailures = async (name: string): Promise<string[]> => {
    const res = await k().kubectl(['get', 'events', '-n', 'default', '--field-selector', `involvedObject.name=${name}`, '-o', 'json'])
    const items = (JSON.parse(res.stdout) as { items: Array<{ reason: string, message: string }> }).items
    return items.filter((e) => /^(Failed|ErrImagePull|BackOff|ImagePullBackOff)$/.test(e.reason)).map((e) => `${e.reason}: ${e.message}`)
  }
  const spegelPods = async (): Promise<Array<{ name: string, uid: string, node: string, ip: string, ready: boolean }>> => {
    const res = await k().kubectl(['get', 'pods', '-n', namespace, '-l', 'app.kubernetes.io/component=spegel', '-o', 'json'])
    const items = (JSON.parse(res.stdout) as { items: Array<{ metadata: { name: string, uid: string, deletionTimestamp?: string }, spec: { nodeName: string }, status: { podIP?: string, conditions?: Array<{ type: string, status: string }> } }> }).items
    return items.map((p) => ({
      name: p.metadata.name,
      uid: p.metadata.uid,
      node: p.spec.nodeName,
      ip: p.status.podIP ?? '',
      ready: p.metadata.deletionTimestamp === undefined && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
    }))
  }
  /**
   * Whether every node's NodePort takes its containerd to the Spegel pod on that node, as the chart's Service asks
   * (trafficDistribution: PreferSameNode). Until the EndpointSlice controller has given every endpoint its node hint
   * and kube-proxy has applied them (a moment after the pods are Ready), kube-proxy spreads connections over all pods,
   * and a node's pull is answered by other nodes' Spegel. Each node opens 6 connections to its NodePort; its own pod
   * must count all 6 (by chance: 1 in 729).
   */
  const nodePortsStayOnNode = async (tls = false): Promise<boolean> => {
    const pods = await spegelPods()
    const client = tls ? ['-k', '--cert', `${hostsDir}/_default/spegel-client.crt`, '--key', `${hostsDir}/_default/spegel-client.key`] : []
    for (const node of k().nodes) {
      const pod = pods.find((p) => p.node === node.name && p.ready)
      if (pod === undefined) return false
      const served = async (): Promise<number> => {
        const res = await node.exec('curl', ['-s', `http://${pod.ip}:9090/metrics`], { allowNonZero: true })
        return metricSum(res.stdout, 'http_request_duration_seconds_count', { handler: '/v2/*', method: 'GET' })
      }
      const before = await served()
      for (let i = 0; i < 6; i++) {
        await node.exec('curl', ['-s', '-o', '/dev/null', ...client, `${tls ? 'https' : 'http'}://${node.member.ip}:30020/v2/`], { allowNonZero: true })
      }
      if (await served() - before !== 6) return false
    }
    return true
  }
  /** The layers of an app image that the pause image (on every node from the start) does not share: its data. */
  const ownLayers = (pushed: PushedImage): ImageDescriptor[] => {
    const shared = new Set(image('pause').manifests[0]!.layers.map((l) => l.digest))
    return pushed.manifests[0]!.layers.filter((l) => !shared.has(l.digest))
  }
  const image = (key: string): PushedImage => {
    const found = images[key]
    assert.ok(found !== undefined, `image ${key} was pushed`)
    return found
  }

  it('installs with the Talos values: the DaemonSet is Ready on every node through its own probes', async () => {
    const c = k()
    const spegel = image('spegel')
    const [repository] = spegel.ref.split(':test')
    // As the README's Talos steps: the namespace first (privileged: Talos enforces baseline), then the chart.
    await c.kubectl(['apply', '-f', join(repoRoot, 'talos-patches/namespace.yaml')])
    const res = await c.helm(['install', 'spegel', chartDir, '-n', namespace, '--create-namespace', '-f', talosValues,
      '--set', `image.repository=${repository}`, '--set', 'image.tag=test', '--wait', '--timeout', '5m'])
    assert.equal(res.code, 0)
    const pods = await spegelPods()
    assert.deepEqual(pods.map((p) => p.node).sort(), c.nodes.map((n) => n.name).sort(), 'one pod per node')
    assert.ok(pods.every((p) => p.ready), 'every pod is Ready')
    // The configuration init container wrote each node's mirror configuration where Talos's containerd reads it.
    for (const node of c.nodes) {
      const hosts = await readFile(node.path(`${hostsDir}/_default/hosts.toml`), 'utf8')
      assert.ok(hosts.includes(`[host.'http://${node.member.ip}:30020']`), `${node.name}'s hosts.toml names its own NodePort:\n${hosts}`)
      // The upstream's own directory, which containerd reads instead of _default: our mirror first, then its CA, kept
      // (containerd trusts the upstream through nothing else: without it every miss would fail).
      const own = await readFile(node.path(`${hostsDir}/${c.upstream.host}/hosts.toml`), 'utf8')
      const mirrorAt = own.indexOf(`[host.'http://${node.member.ip}:30020']`)
      const upstreamAt = own.indexOf(`[host.'https://${c.upstream.host}']`)
      assert.ok(mirrorAt >= 0 && upstreamAt > mirrorAt && own.includes(`ca = '${hostsDir}/${c.upstream.host}/ca.crt'`), `${node.name}'s ${c.upstream.host}/hosts.toml sends containerd to the mirror first and keeps the CA:\n${own}`)
    }
    // The NodePort keeps each node's containerd on its own node's Spegel (the metrics below count per node).
    await waitFor(async () => await nodePortsStayOnNode(), { timeoutMs: 60_000, intervalMs: 1000, what: 'each node\'s NodePort to reach its own Spegel pod' })
  })

  it('pods on nodes 2 and 3 pull the image node 1 pulled, and the upstream serves none of its blobs again', async () => {
    const c = k()
    const [n1, n2, n3] = c.nodes as [K8sNode, K8sNode, K8sNode]
    const v1 = image('v1')
    c.upstream.resetAccessLog()
    await runPods([{ name: 'first', node: n1, image: v1.ref }])
    await c.upstream.waitForQuiet()
    const layers = ownLayers(v1)
    const firstBytes = c.upstream.blobBytesServed({ repository: v1.repository })
    assert.ok(firstBytes >= layers.reduce((n, l) => n + l.size, 0), `node 1 pulled the layers from the upstream (${firstBytes} bytes)`)

    // Node 2's Spegel finds node 1's copy of the last layer in the DHT before the other pods are made.
    const pod2 = (await spegelPods()).find((p) => p.node === n2.name)
    assert.ok(pod2 !== undefined)
    const lastLayer = layers.at(-1)!.digest
    await waitFor(async () => {
      const res = await n2.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-I', `http://${pod2.ip}:5000/v2/${v1.repository}/blobs/${lastLayer}?ns=${c.upstream.host}`], { allowNonZero: true })
      return res.stdout.trim() === '200'
    }, { timeoutMs: 60_000, intervalMs: 1000, what: 'node 2 to find node 1\'s layers through the DHT' })

    c.upstream.resetAccessLog()
    await runPods([{ name: 'second', node: n2, image: v1.ref }, { name: 'third', node: n3, image: v1.ref }])
    await c.upstream.waitForQuiet()
    const blobGets = c.upstream.accessLog().filter((e) => e.method === 'GET' && e.path.includes('/blobs/'))
    assert.deepEqual(blobGets.map((e) => `${e.path} ${e.status} ${e.remoteAddr}`), [], 'the upstream served no blob of the image to nodes 2 and 3')
    assert.equal(c.upstream.blobBytesServed({ repository: v1.repository }), 0)
  })

  it('the metrics Service reaches every pod, whose /metrics show the mirror hits and the bytes served', async () => {
    const c = k()
    const [n1] = c.nodes as [K8sNode]
    const slices = await c.kubectl(['get', 'endpointslices', '-n', namespace, '-l', 'kubernetes.io/service-name=spegel', '-o', 'json'])
    const endpoints = (JSON.parse(slices.stdout) as { items: Array<{ endpoints: Array<{ addresses: string[], nodeName: string }>, ports: Array<{ name: string, port: number }> }> }).items
    const port = endpoints.flatMap((s) => s.ports).find((p) => p.name === 'metrics')?.port
    assert.equal(port, 9090)
    const byNode = new Map(endpoints.flatMap((s) => s.endpoints).map((e) => [e.nodeName, e.addresses[0]!]))
    assert.equal(byNode.size, 3, 'the metrics Service has one endpoint per node')
    const metricsOf = async (node: K8sNode): Promise<string> => (await n1.exec('curl', ['-sf', `http://${byNode.get(node.name)!}:${port}/metrics`])).stdout
    const [m1, m2, m3] = await Promise.all(c.nodes.map(metricsOf)) as [string, string, string]
    const v1 = image('v1')
    const layerBytes = ownLayers(v1).reduce((n, l) => n + l.size, 0)
    // Node 3 may take some layers from node 2, which has them too by then: together the nodes served the layers from
    // their own content twice over, and node 1 served some of them.
    const served = [m1, m2, m3].map((m) => metricSum(m, 'spegel_served_bytes_total', { source: 'local' }))
    assert.ok(served[0]! > 0, 'node 1 served layers to its peers')
    assert.ok(served.reduce((a, b) => a + b, 0) >= 2 * layerBytes, `the nodes served the layers to nodes 2 and 3 from their own content (${served.join(', ')} bytes)`)
    for (const [name, text] of [['node-2', m2], ['node-3', m3]] as const) {
      assert.ok(metricSum(text, 'spegel_mirror_requests_total', { cache: 'hit' }) >= ownLayers(v1).length, `${name} counts its mirror hits`)
      // The tag came from node 1 and was confirmed with the upstream, which the pod trusts through the CA in the
      // node's hosts.toml (mounted read-only), as containerd does: not taken as unreachable.
      assert.ok(metricSum(text, 'spegel_tag_confirmations_total', { outcome: 'confirmed' }) >= 1, `${name} confirmed the tag with the upstream:\n${text.split('\n').filter((l) => l.startsWith('spegel_tag_confirmations_total')).join('\n')}`)
    }
    // And through the Service's own address, as Prometheus would scrape it.
    const svc = await c.kubectl(['get', 'service', '-n', namespace, 'spegel', '-o', 'jsonpath={.spec.clusterIP}'])
    const viaService = await n1.exec('curl', ['-sf', `http://${svc.stdout.trim()}:${port}/metrics`])
    assert.match(viaService.stdout, /^spegel_mirror_requests_total/m)
  })

  it('helm upgrade with a changed value rolls every pod while pods pull, and no pull fails', async () => {
    const c = k()
    const v2 = image('v2')
    const old = await spegelPods()
    const swarmKey = async (): Promise<string> => (await c.kubectl(['get', 'secret', '-n', namespace, 'spegel-router-psk', '-o', 'jsonpath={.data.swarm\\.key}'])).stdout
    const keyBefore = await swarmKey()
    assert.ok(keyBefore.length > 0, 'the chart made a swarm key')
    const upgrade = c.helm(['upgrade', 'spegel', chartDir, '-n', namespace, '--reuse-values', '--set', 'spegel.logLevel=DEBUG', '--wait', '--timeout', '5m'])
    // Once the rollout has begun (an old pod is going), pods on every node pull an image nobody has yet.
    await waitFor(async () => (await spegelPods()).some((p) => old.some((o) => o.uid === p.uid && !p.ready)) || (await spegelPods()).some((p) => !old.some((o) => o.uid === p.uid)),
      { timeoutMs: 60_000, intervalMs: 200, what: 'the rollout to start' })
    const pulls = c.nodes.map((node, i) => ({ name: `during-upgrade-${i + 1}`, node, image: v2.ref }))
    await runPods(pulls)
    const res = await upgrade
    assert.equal(res.code, 0)
    for (const p of pulls) assert.deepEqual(await pullFailures(p.name), [], `${p.name} pulled without a failure`)
    const now = await spegelPods()
    assert.equal(now.length, 3)
    assert.ok(now.every((p) => p.ready), 'every new pod is Ready')
    assert.ok(now.every((p) => !old.some((o) => o.uid === p.uid)), 'every pod was replaced')
    const ds = await c.kubectl(['get', 'daemonset', '-n', namespace, 'spegel', '-o', 'jsonpath={.spec.template.spec.containers[0].args}'])
    assert.match(ds.stdout, /--log-level=DEBUG/)
    // The swarm key the chart made at install is kept (helm lookup): a new one would split old and new pods.
    assert.equal(await swarmKey(), keyBefore, 'helm upgrade kept the swarm key')
  })

  it('spegel.registryTls on: HTTPS probes pass, containerd pulls through mutual TLS, and an upgrade keeps the CA', async () => {
    const c = k()
    const [n1, n2, n3] = c.nodes as [K8sNode, K8sNode, K8sNode]
    const v3 = image('v3')
    const res = await c.helm(['upgrade', 'spegel', chartDir, '-n', namespace, '--reuse-values', '--set', 'spegel.registryTls.enabled=true', '--wait', '--timeout', '5m'])
    assert.equal(res.code, 0)
    assert.ok((await spegelPods()).every((p) => p.ready), 'every pod is Ready through its HTTPS probes')
    for (const node of c.nodes) {
      const hosts = await readFile(node.path(`${hostsDir}/_default/hosts.toml`), 'utf8')
      assert.ok(hosts.includes(`[host.'https://${node.member.ip}:30020']`), `${node.name}'s containerd reaches its mirror over HTTPS:\n${hosts}`)
      assert.match(hosts, /^client = \[\['spegel-client\.crt', 'spegel-client\.key'\]\]$/m)
    }
    const ca = async (): Promise<string> => (await c.kubectl(['get', 'secret', '-n', namespace, 'spegel-registry-tls', '-o', 'jsonpath={.data.ca\\.crt}'])).stdout
    const caBefore = await ca()
    assert.ok(caBefore.length > 0, 'the chart made a CA')
    await waitFor(async () => await nodePortsStayOnNode(true), { timeoutMs: 60_000, intervalMs: 1000, what: 'each node\'s NodePort to reach its own Spegel pod' })

    c.upstream.resetAccessLog()
    await runPods([{ name: 'tls-first', node: n1, image: v3.ref }])
    // Node 2's Spegel finds node 1's copy over TLS, with the client certificate the chart gave its containerd.
    const pod2 = (await spegelPods()).find((p) => p.node === n2.name)
    assert.ok(pod2 !== undefined)
    const certs = `${hostsDir}/_default`
    const lastLayer = ownLayers(v3).at(-1)!.digest
    await waitFor(async () => {
      const head = await n2.exec('curl', ['-s', '-k', '--cert', `${certs}/spegel-client.crt`, '--key', `${certs}/spegel-client.key`, '-o', '/dev/null', '-w', '%{http_code}', '-I',
        `https://${pod2.ip}:5000/v2/${v3.repository}/blobs/${lastLayer}?ns=${c.upstream.host}`], { allowNonZero: true })
      return head.stdout.trim() === '200'
    }, { timeoutMs: 60_000, intervalMs: 1000, what: 'node 2 to find node 1\'s layers over TLS' })
    const anonymous = await n2.exec('curl', ['-s', '-k', '-o', '/dev/null', '-w', '%{http_code}', `https://${pod2.ip}:5000/v2/${v3.repository}/blobs/${lastLayer}?ns=${c.upstream.host}`], { allowNonZero: true })
    assert.equal(anonymous.stdout.trim(), '401', 'a client without the chart\'s certificate reads nothing')
    await c.upstream.waitForQuiet()
    c.upstream.resetAccessLog()
    await runPods([{ name: 'tls-second', node: n2, image: v3.ref }, { name: 'tls-third', node: n3, image: v3.ref }])
    await c.upstream.waitForQuiet()
    assert.equal(c.upstream.blobBytesServed({ repository: v3.repository }), 0, 'nodes 2 and 3 took every blob from their peers over TLS')

    const again = await c.helm(['upgrade', 'spegel', chartDir, '-n', namespace, '--reuse-values', '--set', 'spegel.logLevel=INFO', '--wait', '--timeout', '5m'])
    assert.equal(again.code, 0)
    assert.equal(await ca(), caBefore, 'helm upgrade kept the CA (helm lookup): old and new pods trust each other')
    assert.ok((await spegelPods()).every((p) => p.ready))
  })

  it('helm uninstall runs the post-delete hook and every node\'s hosts.toml is back, byte for byte', async () => {
    const c = k()
    await c.kubectl(['delete', 'pods', '-n', 'default', '-l', 'test=pull', '--wait=true'], { timeoutMs: 120_000 })
    const res = await c.helm(['uninstall', 'spegel', '-n', namespace, '--wait', '--timeout', '5m'])
    assert.equal(res.code, 0)
    const after = await Promise.all(c.nodes.map(async (n) => await snapshot(n.path(hostsDir))))
    for (const [i, node] of c.nodes.entries()) assert.deepEqual(after[i], hostsBefore[i], `${node.name}: ${hostsDir} is as it was before the install`)
    // The hook's DaemonSet, Service and Pod are deleted by helm; their pods go within their grace period.
    await waitFor(async () => (await c.kubectl(['get', 'all', '-n', namespace, '-o', 'name'])).stdout.trim() === '',
      { timeoutMs: 60_000, intervalMs: 1000, what: `namespace ${namespace} to be empty after the uninstall` })
  })
})
