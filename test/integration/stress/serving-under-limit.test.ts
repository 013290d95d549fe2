// containerd: default only. What this tests is the daemon's memory behaviour under a cgroup; containerd is only its
// content source and the CRI client, so scripts/run-tests.ts runs it on the default containerd (2.1) alone.
//
// Issue 15: "a budget is never the reason a node stops serving". Eight network-namespace nodes, each with the containerd
// SPEGEL_TEST_CONTAINERD names (2.1, what Talos runs, unless told otherwise) and the daemon as the image runs it (bundle, ENTRYPOINT flags, image environment) inside a
// real 128 MiB memory cgroup (the chart's limit); pulls through CRI PullImage as the kubelet does; one docker-registry
// upstream whose access log counts the blob bytes it sends.
//
//   a. Fan-out: node 1 pulls a 3-layer image; nodes 2-8 then pull it at once; twice, with a new image each time.
//      The upstream must send 0 blob bytes after node 1's pull and no transfer may be refused
//      (spegel_transfer_rejections_total stays 0 on every node).
//   b. Stalled clients: 20, then 200, sockets from another namespace request a layer on node 1 and never read (4 KiB
//      receive buffer). Node 2 then pulls an image only node 1 holds: it must come from node 1 (0 upstream blob bytes),
//      and node 1 must end every stalled transfer (spegel_transfer_stall_timeouts_total): by its stall timeout (5 s
//      here), or at once when the stalled ones already hold as much memory as its transfer budget (200 sockets do).
// Every daemon must still run at the end (none OOM-killed).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { requireMemoryCgroupV1 } from '../../helpers/cgroup.ts'
import { testContainerd } from '../../helpers/containerd.ts'
import { CriImages } from '../../helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { startProcess, type ProcessHandle } from '../../helpers/process.ts'
import { metricsPort, registryPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../../helpers/spegel-cluster.ts'
import { requireTool } from '../../helpers/tools.ts'
import { waitFor } from '../../helpers/wait.ts'

const MiB = 1024 * 1024
const nodeCount = 8
const stallTimeoutS = 5

/** A python3 program that opens N connections, sends a GET on each and never reads; prints "open N" once all are sent. */
const stuckClients = `
import socket, sys, time
host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    s.sendall(("GET %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (path, host)).encode())
    socks.append(s)
print("open %d" % len(socks), flush=True)
time.sleep(3600)
`

async function metric (node: SpegelNode, name: string): Promise<number> {
  const text = await (await fetch(`http://${node.ip}:${metricsPort}/metrics`)).text()
  return text.split('\n').filter((l) => l.startsWith(name + ' ') || l.startsWith(name + '{')).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0)
}

/** What each daemon says about its load, for failure messages. */
async function diagnose (nodes: readonly SpegelNode[]): Promise<string> {
  const lines: string[] = []
  for (const n of nodes) {
    const text = await fetch(`http://${n.ip}:${metricsPort}/metrics`).then(async (r) => await r.text()).catch((err: unknown) => `unreachable: ${String(err)}`)
    const wanted = text.split('\n').filter((l) => /^(spegel_transfer_rejections_total|spegel_peer_failures_total|spegel_transfer_buffer_bytes|spegel_transfer_stall_timeouts_total|spegel_mirror_requests_total|unreachable)/.test(l))
    const warnings = n.logs().filter((r) => r.level === 'WARN' || r.level === 'ERROR').slice(-5).map((r) => JSON.stringify(r).slice(0, 300))
    lines.push(`${n.name} (daemon ${n.daemon?.exitStatus === undefined ? 'running' : `exited ${JSON.stringify(n.daemon.exitStatus)}`}, cgroup peak ${((await n.cgroup?.maxUsageBytes() ?? 0) / MiB).toFixed(0)} MiB): ${wanted.join('; ')}`, ...warnings.map((w) => `  ${w}`))
  }
  return lines.join('\n')
}

async function pushImage (cluster: SpegelCluster, name: string): Promise<PushedImage> {
  const built = await buildImage({ layers: [{ sizeBytes: 21 * MiB }, { sizeBytes: 21 * MiB }, { sizeBytes: 21 * MiB }], tag: 'v1' })
  try {
    return await pushLayout(built, cluster.upstreamHost, `limits/${name}`, 'v1')
  } finally {
    await built.cleanup()
  }
}

async function servable (cluster: SpegelCluster, nodes: readonly SpegelNode[], image: PushedImage): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    for (const d of [image.digest, ...image.children.map((c) => c.digest)]) {
      await cluster.waitServable(n, image.repository, d === image.digest ? 'manifests' : 'blobs', d, { timeoutMs: 60_000 })
    }
  }))
}

describe(`serving under the chart's 128 MiB limit, containerd ${testContainerd().version}`, { timeout: 600_000 }, () => {
  let cluster: SpegelCluster
  let cri: Map<SpegelNode, CriImages>
  before(async () => {
    requireNetnsSupport()
    requireMemoryCgroupV1()
    requireTool('python3', 'apt-get install -y python3')
    cluster = await startSpegelCluster({
      nodes: nodeCount,
      prefix: 'limits',
      image: { memoryLimitBytes: 128 * MiB },
      daemonArgs: [`--stall-timeout=${stallTimeoutS}s`],
    })
    cri = new Map(cluster.nodes.map((n) => [n, new CriImages(n.containerd.socket)]))
  })
  after(async () => {
    for (const c of cri?.values() ?? []) c.close()
    await cluster?.stop()
  })

  it('a fan-out from one holder leaves the upstream nothing to send, run after run, and refuses no transfer', async () => {
    const [n1, ...rest] = cluster.nodes as [SpegelNode, ...SpegelNode[]]
    for (let run = 1; run <= 2; run++) {
      const image = await pushImage(cluster, `fanout${run}`)
      await cri.get(n1)!.pull(image.ref)
      await servable(cluster, rest, image)
      await cluster.upstream.waitForQuiet()
      cluster.upstream.resetAccessLog()
      await Promise.all(rest.map(async (n) => await cri.get(n)!.pull(image.ref)))
      await cluster.upstream.waitForQuiet()
      const sent = cluster.upstream.blobBytesServed({ repository: image.repository })
      assert.equal(sent, 0, `run ${run}: the upstream sent ${sent} blob bytes\n${await diagnose(cluster.nodes)}`)
    }
    for (const n of cluster.nodes) assert.equal(await metric(n, 'spegel_transfer_rejections_total'), 0, `${n.name} refused transfers`)
    for (const n of cluster.nodes) assert.equal(n.daemon?.exitStatus, undefined, `${n.name}'s daemon exited`)
  })

  for (const sockets of [20, 200]) {
    it(`${sockets} sockets that never read on node 1 do not keep it from serving node 2, and the stall timeout ends them`, async () => {
      const [n1, n2] = cluster.nodes as [SpegelNode, SpegelNode, ...SpegelNode[]]
      const image = await pushImage(cluster, `stuck${sockets}`)
      await cri.get(n1)!.pull(image.ref)
      await servable(cluster, [n2], image)
      const layer = image.children.find((c) => c.size > MiB)!
      const timeoutsBefore = await metric(n1, 'spegel_transfer_stall_timeouts_total')
      const stuck: ProcessHandle = await startProcess('python3', ['-c', stuckClients, n1.ip, String(registryPort), `/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstreamHost)}`, String(sockets)], {
        netns: cluster.nodes[2]!.netns,
        name: `stuck-clients-${sockets}`,
      })
      try {
        await waitFor(() => stuck.output().includes(`open ${sockets}`), { timeoutMs: 30_000, what: `${sockets} stuck clients to connect`, context: () => stuck.output() })
        // Every stuck transfer has started and its client's window is full (or, once the stalled ones hold as much as
        // node 1's transfer budget, it has been ended already).
        await waitFor(async () => await metric(n1, 'http_requests_inflight') + await metric(n1, 'spegel_transfer_stall_timeouts_total') - timeoutsBefore >= sockets, { timeoutMs: 10_000, what: 'the stuck transfers to be in flight or ended' })
        await cluster.upstream.waitForQuiet()
        cluster.upstream.resetAccessLog()
        await cri.get(n2)!.pull(image.ref)
        await cluster.upstream.waitForQuiet()
        const sent = cluster.upstream.blobBytesServed({ repository: image.repository })
        assert.equal(sent, 0, `the upstream sent ${sent} blob bytes: node 1 did not serve node 2\n${await diagnose([n1, n2])}`)
        assert.equal(await metric(n1, 'spegel_transfer_rejections_total'), 0, 'node 1 refused a transfer')
        let ended = 0
        await waitFor(async () => {
          ended = await metric(n1, 'spegel_transfer_stall_timeouts_total') - timeoutsBefore
          return ended >= sockets
        }, { timeoutMs: (stallTimeoutS + 20) * 1000, what: `the stall timeout to end ${sockets} transfers`, context: () => `ended ${ended}` })
        assert.equal(n1.daemon?.exitStatus, undefined, 'node 1\'s daemon exited')
      } finally {
        await stuck.stop('SIGKILL')
      }
    })
  }
})
