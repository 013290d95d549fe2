// Peer-to-peer benchmarks of issue 3 on a three-node cluster of network namespaces (test/helpers/spegel-cluster.ts):
// each node has its own containerd and `spegel registry` with production defaults; one upstream docker-registry.
//
// (a) Pull time of a ~300 MB three-layer image on node 2 after node 1 has it (through node 2's mirror), against
//     pulling it straight from the upstream (node 3, whose hosts.toml then names only the upstream), with the
//     upstream's link shaped to 100 Mbit/s by tc tbf; median of several rounds, each starting cold (image and content
//     removed), plus the upstream's blob bytes during the peer pulls (target: 0). Each pull is done twice: with CRI
//     PullImage, as the kubelet pulls (containerd fetches and unpacks in one pipeline), and with `ctr images pull`
//     (fetch in the ctr process, then unpack).
// (b) Throughput of a 1 GiB blob proxied by node 2's mirror from node 1 against node 1 serving it itself; curl in
//     the benchmark's namespace reaches both over the cluster's host link; alternating order, several rounds.
// (c) Lookup latency through node 3's mirror (HEAD of a blob only node 1 holds): cold = the first request for each
//     key, warm = repeated requests; p50 and p99.
//
//     With `--baseline REF`, (b) instead compares two daemons on the same cluster: the working tree's bundle and
//     revision REF's (bench/baseline.ts), both with the image's Node flags. Nodes 1 and 2 run one of them at a time,
//     restarted fresh before every measurement, in alternating order per round; so node 1's serving and node 2's
//     proxying are both the bundle's. Node 3 keeps the working tree's sources (it only carries the DHT here).
//
//   node bench/p2p-pull.ts [--rounds 3] [--image-mib 300] [--blob-mib 1024] [--blob-rounds 3] [--keys 100] [--rate 100mbit] [--only a,b,c] [--baseline e9b6e12]
//
// Needs root and the Debian packages containerd, docker-registry, skopeo, iproute2 and curl. Prints a markdown summary.
import http from 'node:http'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cpus } from 'node:os'
import { parseArgs } from 'node:util'
import { makeImage, writeOciArchive } from '../test/helpers/containerd.ts'
import { CriImages } from '../test/helpers/cri-images.ts'
import { buildImage, pushLargeBlobImage, pushLayout, type PushedImage } from '../test/helpers/images.ts'
import { requireNetnsSupport } from '../test/helpers/netns.ts'
import { run, startProcess, type ProcessHandle } from '../test/helpers/process.ts'
import { waitFor } from '../test/helpers/wait.ts'
import { metricsPort, registryPort, routerPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../test/helpers/spegel-cluster.ts'
import { requireTool } from '../test/helpers/tools.ts'
import { buildBaselineBundle, buildCurrentBundle, shippedEnv, shippedNodeOptions, type DaemonBundle } from './baseline.ts'
import { median, quantile, secs } from './stats.ts'

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'image-mib': { type: 'string', default: '300' },
    'blob-mib': { type: 'string', default: '1024' },
    'blob-rounds': { type: 'string', default: '3' },
    keys: { type: 'string', default: '100' },
    rate: { type: 'string', default: '100mbit' },
    only: { type: 'string', default: 'a,b,c' },
    baseline: { type: 'string' },
  },
})
const MiB = 1024 * 1024
const rounds = Number(values.rounds)
const imageBytes = Number(values['image-mib']) * MiB
const blobBytes = Number(values['blob-mib']) * MiB
const blobRounds = Number(values['blob-rounds'])
const keyCount = Number(values.keys)
const rate = values.rate
const only = new Set(values.only.split(','))

requireNetnsSupport()
requireTool('curl', 'apt-get install -y curl')

const mibps = (bps: number): string => (bps / MiB).toFixed(0)

function allDigests (image: PushedImage): string[] {
  return [image.digest, ...image.children.map((c) => c.digest)]
}

async function timedPull (node: SpegelNode, ref: string, mirrors: boolean): Promise<number> {
  const started = performance.now()
  await node.pull(ref, { mirrors, timeoutMs: 900_000 })
  return performance.now() - started
}

/** CPU time (user + system) a process has used so far, in ms, from /proc (clock ticks of 10 ms). */
async function cpuMs (pid: number | undefined): Promise<number> {
  if (pid === undefined) throw new Error('daemon not running')
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/** curl to /dev/null; bytes per second. */
async function download (url: string, expected: number): Promise<number> {
  const res = await run('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', url], { timeoutMs: 600_000 })
  const [size, seconds] = res.stdout.trim().split(' ').map(Number)
  if (size !== expected) throw new Error(`short download from ${url}: ${size} of ${expected} bytes`)
  return expected / (seconds ?? 1)
}

/**
 * HEAD through a mirror; milliseconds and status. A keep-alive node:http client, as light as containerd's: fetch()
 * (undici) adds about a millisecond per request of its own, which would swamp what is measured here.
 */
const headAgent = new http.Agent({ keepAlive: true, maxSockets: 1 })
async function head (url: string): Promise<{ ms: number, status: number }> {
  const started = performance.now()
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request(url, { method: 'HEAD', agent: headAgent }, (res) => {
      res.resume()
      res.once('end', () => { resolve(res.statusCode ?? 0) })
    })
    req.once('error', reject)
    req.end()
  })
  return { ms: performance.now() - started, status }
}

async function waitAdvertised (node: SpegelNode, since: number): Promise<void> {
  await waitFor(() => node.logs().slice(since).some((r) => r.msg === 'advertisements updated'), { timeoutMs: 60_000, what: `${node.name} to advertise` })
}

async function pullBench (cluster: SpegelCluster): Promise<string[]> {
  const [n1, n2, n3] = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
  const layer = Math.round(imageBytes / 3)
  const built = await buildImage({ layers: [{ sizeBytes: layer }, { sizeBytes: layer }, { sizeBytes: layer }], tag: 'v1' })
  let image: PushedImage
  try {
    image = await pushLayout(built, cluster.upstreamHost, 'bench/pull', 'v1')
  } finally {
    await built.cleanup()
  }
  const size = image.children.reduce((n, c) => n + c.size, image.size)
  const up = cluster.net.upstream
  if (up === undefined) throw new Error('no upstream namespace')
  if (rate !== 'none') await cluster.net.shape(up, { rate })
  const n1Pull = await timedPull(n1, image.ref, true)
  await cluster.waitServable(n2, image.repository, 'manifests', image.tag)

  const peerCri: number[] = []
  const directCri: number[] = []
  const peerCtr: number[] = []
  const directCtr: number[] = []
  const upstreamBytes: number[] = []
  const hostsFile = join(n3.hostsDir, cluster.upstreamHost, 'hosts.toml')
  const mirrorConfig = await readFile(hostsFile, 'utf8')
  const criOn = new Map(cluster.nodes.map((n) => [n, new CriImages(n.containerd.socket)]))
  const cri = (n: SpegelNode): CriImages => criOn.get(n) as CriImages
  const forget = async (n: SpegelNode): Promise<void> => {
    await cri(n).remove(image.ref).catch(() => {})
    await n.forget([image.ref], allDigests(image))
  }
  const timed = async (fn: () => Promise<unknown>): Promise<number> => {
    const started = performance.now()
    await fn()
    return performance.now() - started
  }
  try {
    for (let r = 0; r < rounds; r++) {
      // The kubelet's way: CRI PullImage, containerd fetching through its hosts.toml and unpacking as layers land.
      await cluster.upstream.waitForQuiet()
      cluster.upstream.resetAccessLog()
      peerCri.push(await timed(async () => await cri(n2).pull(image.ref)))
      // ctr images pull: fetches in the ctr process, then unpacks, one after the other.
      await forget(n2)
      peerCtr.push(await timed(async () => { await n2.pull(image.ref, { mirrors: true, timeoutMs: 900_000 }) }))
      await cluster.upstream.waitForQuiet()
      upstreamBytes.push(cluster.upstream.blobBytesServed())
      await forget(n2)
      // Node 3 without the mirror: a hosts.toml naming only the (plain HTTP) upstream.
      await writeFile(hostsFile, `server = "${cluster.upstream.url}"\n\n[host."${cluster.upstream.url}"]\n  capabilities = ["pull", "resolve"]\n`)
      try {
        directCri.push(await timed(async () => await cri(n3).pull(image.ref)))
      } finally {
        await writeFile(hostsFile, mirrorConfig)
      }
      await forget(n3)
      directCtr.push(await timed(async () => { await n3.pull(image.ref, { mirrors: false, timeoutMs: 900_000 }) }))
      await forget(n3)
      console.error(`  round ${r + 1}: CRI peer ${secs(peerCri.at(-1)!)} s, direct ${secs(directCri.at(-1)!)} s; ctr peer ${secs(peerCtr.at(-1)!)} s, direct ${secs(directCtr.at(-1)!)} s; upstream blob bytes during the peer pulls ${upstreamBytes.at(-1)}`)
    }
  } finally {
    for (const c of criOn.values()) c.close()
  }
  if (rate !== 'none') await cluster.net.unshape(up)
  await forget(n1)
  const row = (what: string, xs: number[]): string => `| ${what} | ${secs(median(xs))} | ${xs.map(secs).join(', ')} |`
  return [
    `### (a) Pull of a ${(size / MiB).toFixed(0)} MiB three-layer image (gzip), upstream link ${rate}`,
    '',
    `Node 1's first pull (ctr, from the upstream through its hosts.toml fallback): ${secs(n1Pull)} s.`,
    '',
    '| pull on a cold node (fetch + unpack) | median s | rounds (s) |',
    '|---|---|---|',
    row('CRI PullImage (as the kubelet) on node 2, through its mirror (peer: node 1)', peerCri),
    row('CRI PullImage on node 3, straight from the upstream', directCri),
    row('`ctr images pull` on node 2, through its mirror', peerCtr),
    row('`ctr images pull` on node 3, straight from the upstream', directCtr),
    '',
    `Speed-up (median direct / median peer): **${(median(directCri) / median(peerCri)).toFixed(1)}×** with CRI, ${(median(directCtr) / median(peerCtr)).toFixed(1)}× with ctr. Upstream blob bytes during the peer pulls: ${upstreamBytes.join(', ')} (target 0).`,
  ]
}

async function throughputBench (cluster: SpegelCluster): Promise<string[]> {
  const [n1, n2] = cluster.nodes as [SpegelNode, SpegelNode]
  const image = await pushLargeBlobImage(cluster.upstreamHost, blobBytes, { repository: 'bench/blob' })
  const layer = image.manifests[0]?.layers[0]
  if (layer === undefined) throw new Error('no layer')
  await n1.pull(image.ref, { contentOnly: true, timeoutMs: 900_000 })
  await cluster.waitServable(n2, image.repository, 'blobs', layer.digest, { timeoutMs: 60_000 })
  const path = `/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstreamHost)}`
  const local: number[] = []
  const proxied: number[] = []
  const ratios: number[] = []
  // CPU per MiB: node 1 serving its own content, node 2 proxying (receive, hash, send).
  const serveCpu: number[] = []
  const proxyCpu: number[] = []
  const mib = layer.size / MiB
  const localRun = async (): Promise<number> => {
    const before = await cpuMs(n1.daemon?.pid)
    const rate = await download(n1.mirrorUrl + path, layer.size)
    serveCpu.push((await cpuMs(n1.daemon?.pid) - before) / mib)
    return rate
  }
  const proxiedRun = async (): Promise<number> => {
    const before = await cpuMs(n2.daemon?.pid)
    const rate = await download(n2.mirrorUrl + path, layer.size)
    proxyCpu.push((await cpuMs(n2.daemon?.pid) - before) / mib)
    return rate
  }
  for (let r = 0; r < blobRounds; r++) {
    let l: number
    let p: number
    if (r % 2 === 0) {
      l = await localRun()
      p = await proxiedRun()
    } else {
      p = await proxiedRun()
      l = await localRun()
    }
    local.push(l)
    proxied.push(p)
    ratios.push(p / l)
    console.error(`  round ${r + 1}: local ${mibps(l)} MiB/s, proxied ${mibps(p)} MiB/s`)
  }
  await n1.forget([image.ref], allDigests(image))
  return [
    `### (b) ${(layer.size / MiB).toFixed(0)} MiB blob: proxied by node 2 from node 1 vs served by node 1 (curl over veth)`,
    '',
    '| path | median MiB/s | rounds (MiB/s) |',
    '|---|---|---|',
    `| node 1 serves its own content | ${mibps(median(local))} | ${local.map(mibps).join(', ')} |`,
    `| node 2 proxies from node 1 (hashing on the way) | ${mibps(median(proxied))} | ${proxied.map(mibps).join(', ')} |`,
    '',
    `Median per-round ratio proxied / local: **${median(ratios).toFixed(2)}×** (rounds: ${ratios.map((r) => r.toFixed(2)).join(', ')}; target ≥ 0.8).`,
    '',
    `CPU per MiB (median): node 1 serving from its store ${median(serveCpu).toFixed(2)} ms, node 2 proxying and hashing ${median(proxyCpu).toFixed(2)} ms.`,
  ]
}

/**
 * Runs `cli` as `node`'s daemon in place of the cluster's own (which must be stopped), with the flags the cluster gives
 * its daemons (NodeImpl.startDaemon in test/helpers/spegel-cluster.ts, which always runs the TypeScript sources) and
 * the image's Node flags; resolves once /readyz answers 200.
 */
async function startNodeDaemon (cluster: SpegelCluster, node: SpegelNode, cli: string, bootstrapPeers: readonly string[]): Promise<ProcessHandle> {
  const proc = await startProcess(process.execPath, [
    cli, 'registry',
    '--log-level=INFO',
    `--registry-addr=${node.ip}:${registryPort}`,
    `--metrics-addr=${node.ip}:${metricsPort}`,
    `--router-addr=${node.ip}:${routerPort}`,
    `--containerd-sock=${node.containerd.socket}`,
    `--containerd-namespace=${node.containerd.namespace}`,
    `--containerd-content-path=${node.containerd.contentPath}`,
    `--containerd-registry-config-path=${node.hostsDir}`,
    // The cluster's data dir, so the node keeps its peer id whichever daemon runs.
    `--data-dir=${join(node.containerd.dir, 'spegel-data')}`,
    '--bootstrap-kind=static',
    ...bootstrapPeers.map((p) => `--static-bootstrap-peers=${p}`),
    '--mirrored-registries', cluster.upstream.url,
  ], { netns: node.netns, name: `spegel-${node.name}`, env: { NODE_OPTIONS: shippedNodeOptions, ...shippedEnv } })
  try {
    await waitFor(async () => {
      if (proc.exitStatus !== undefined) throw new Error(`${node.name}: spegel exited early`)
      const res = await fetch(`${node.mirrorUrl}/readyz`, { signal: AbortSignal.timeout(1000) })
      await res.body?.cancel()
      return res.status === 200
    }, { timeoutMs: 30_000, intervalMs: 100, what: `${node.name} spegel /readyz`, context: () => proc.output() })
  } catch (err) {
    await proc.stop('SIGKILL')
    throw err
  }
  return proc
}

/** (b) with `--baseline`: the same measurement for each bundle on nodes 1 and 2, side by side. */
async function throughputComparison (cluster: SpegelCluster, bundles: readonly DaemonBundle[]): Promise<string[]> {
  const [n1, n2, n3] = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
  const image = await pushLargeBlobImage(cluster.upstreamHost, blobBytes, { repository: 'bench/blob' })
  const layer = image.manifests[0]?.layers[0]
  if (layer === undefined) throw new Error('no layer')
  await n1.pull(image.ref, { contentOnly: true, timeoutMs: 900_000 })
  const path = `/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstreamHost)}`
  const mib = layer.size / MiB
  interface Side { local: number[], proxied: number[], serveCpu: number[], proxyCpu: number[] }
  const sides = new Map<DaemonBundle, Side>(bundles.map((b) => [b, { local: [], proxied: [], serveCpu: [], proxyCpu: [] }]))
  let running: ProcessHandle[] = []
  const stopRunning = async (): Promise<void> => {
    for (const p of running.reverse()) await p.stop('SIGTERM', 10_000)
    running = []
  }
  const measure = async (bundle: DaemonBundle, localFirst: boolean): Promise<{ local: number, proxied: number }> => {
    await stopRunning()
    // Node 1 first, pointed at node 3 (node 1 is everyone's bootstrap peer); then node 2, pointed at node 1.
    const d1 = await startNodeDaemon(cluster, n1, bundle.cli, [n3.routerAddr])
    running.push(d1)
    const d2 = await startNodeDaemon(cluster, n2, bundle.cli, [n1.routerAddr])
    running.push(d2)
    await cluster.waitServable(n2, image.repository, 'blobs', layer.digest, { timeoutMs: 60_000 })
    const side = sides.get(bundle)!
    const localRun = async (): Promise<number> => {
      const before = await cpuMs(d1.pid)
      const rate = await download(n1.mirrorUrl + path, layer.size)
      side.serveCpu.push((await cpuMs(d1.pid) - before) / mib)
      return rate
    }
    const proxiedRun = async (): Promise<number> => {
      const before = await cpuMs(d2.pid)
      const rate = await download(n2.mirrorUrl + path, layer.size)
      side.proxyCpu.push((await cpuMs(d2.pid) - before) / mib)
      return rate
    }
    let local: number
    let proxied: number
    if (localFirst) {
      local = await localRun()
      proxied = await proxiedRun()
    } else {
      proxied = await proxiedRun()
      local = await localRun()
    }
    side.local.push(local)
    side.proxied.push(proxied)
    return { local, proxied }
  }
  const [current, baseline] = bundles as [DaemonBundle, DaemonBundle]
  const proxiedRatios: number[] = []
  const localRatios: number[] = []
  await n2.stopDaemon()
  await n1.stopDaemon()
  try {
    for (let r = 0; r < blobRounds; r++) {
      const order = r % 2 === 0 ? [current, baseline] : [baseline, current]
      const round = new Map<DaemonBundle, { local: number, proxied: number }>()
      for (const bundle of order) round.set(bundle, await measure(bundle, r % 2 === 0))
      const c = round.get(current)!
      const b = round.get(baseline)!
      proxiedRatios.push(c.proxied / b.proxied)
      localRatios.push(c.local / b.local)
      console.error(`  round ${r + 1}: ${order.map((x) => `${x.label} local ${mibps(round.get(x)!.local)} MiB/s, proxied ${mibps(round.get(x)!.proxied)} MiB/s`).join('; ')}`)
    }
  } finally {
    await stopRunning()
    // The cluster's own daemons again, for (c) and (a).
    await n1.startDaemon({ bootstrapPeers: [n3.routerAddr] })
    await n2.startDaemon()
  }
  await n1.forget([image.ref], allDigests(image))
  const ratios = (xs: number[]): string => `**${median(xs).toFixed(2)}×** (rounds: ${xs.map((r) => r.toFixed(2)).join(', ')})`
  const rows = bundles.map((bundle) => {
    const s = sides.get(bundle)!
    const perRound = s.proxied.map((p, i) => p / s.local[i]!)
    return `| ${bundle.label} | ${mibps(median(s.local))} (${s.local.map(mibps).join(', ')}) | ${mibps(median(s.proxied))} (${s.proxied.map(mibps).join(', ')}) | ${median(perRound).toFixed(2)}× | ${median(s.serveCpu).toFixed(2)} / ${median(s.proxyCpu).toFixed(2)} |`
  })
  return [
    `### (b) ${(layer.size / MiB).toFixed(0)} MiB blob, ${current.label} vs ${baseline.label} on nodes 1 and 2 (curl over veth, bundles with the image's Node flags)`,
    '',
    '| daemon on nodes 1 and 2 | node 1 serves its own content, median MiB/s (rounds) | node 2 proxies from node 1, median MiB/s (rounds) | proxied / local (median per round) | CPU ms per MiB, serving / proxying (median) |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    `Median per-round ratio ${current.label} / ${baseline.label}: proxied ${ratios(proxiedRatios)}; local ${ratios(localRatios)}.`,
  ]
}

async function lookupBench (cluster: SpegelCluster): Promise<string[]> {
  const [n1, n2, n3] = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
  // Many small layers: one fresh key per cold lookup.
  const warmupKeys = 10
  const image = makeImage(`${cluster.upstreamHost}/bench/keys:v1`, { layerSizes: Array.from({ length: keyCount + warmupKeys }, () => 64) })
  const archive = join(n1.containerd.dir, 'keys.tar')
  await writeOciArchive(archive, [image])
  const since = n1.logs().length
  await n1.ctr(['images', 'import', '--no-unpack', archive])
  await waitAdvertised(n1, since)
  const layers = image.blobs.slice(2).map((b) => b.digest)
  // Node 2 (not node 3) checks the last key is findable, so node 3's lookups stay cold.
  await cluster.waitServable(n2, 'bench/keys', 'blobs', layers.at(-1)!)
  // Measure in steady state: node 1 publishes the new keys in the background for a moment after they are servable.
  await new Promise((resolve) => setTimeout(resolve, 3_000))
  const url = (digest: string): string => `${n3.mirrorUrl}/v2/bench/keys/blobs/${digest}?ns=${encodeURIComponent(cluster.upstreamHost)}`
  const cold: number[] = []
  let coldMisses = 0
  // The first requests through a freshly started daemon run unoptimised code: a few unmeasured keys warm it up.
  for (const digest of layers.slice(0, warmupKeys)) await head(url(digest))
  for (const digest of layers.slice(warmupKeys)) {
    const { ms, status } = await head(url(digest))
    cold.push(ms)
    if (process.env.BENCH_TRACE !== undefined) console.error(`cold ${cold.length} ${ms.toFixed(1)}`)
    if (status !== 200) coldMisses++
  }
  const warm: number[] = []
  let warmMisses = 0
  const hot = layers.slice(warmupKeys, warmupKeys + 10)
  for (let pass = 0; pass < 20; pass++) {
    for (const digest of hot) {
      const { ms, status } = await head(url(digest))
      warm.push(ms)
      if (status !== 200) warmMisses++
    }
  }
  const f = (ms: number): string => ms.toFixed(1)
  return [
    '### (c) Lookup latency through node 3\'s mirror (HEAD of a blob held by node 1; 3 nodes)',
    '',
    '| | requests | p50 ms | p99 ms | max ms | not found |',
    '|---|---|---|---|---|---|',
    `| cold (first request for a key) | ${cold.length} | ${f(quantile(cold, 0.5))} | ${f(quantile(cold, 0.99))} | ${f(Math.max(...cold))} | ${coldMisses} |`,
    `| warm (repeated, 10 keys × 20) | ${warm.length} | ${f(quantile(warm, 0.5))} | ${f(quantile(warm, 0.99))} | ${f(Math.max(...warm))} | ${warmMisses} |`,
    '',
    'Each time includes the HTTP request from the benchmark to node 3 and node 3\'s HEAD to node 1 (targets: warm p50 ≤ 2 ms, cold p99 ≤ 20 ms).',
  ]
}

// With --baseline, (b) compares the shipped bundles: built before the cluster starts, deleted at the end.
const bundles: DaemonBundle[] = []
if (values.baseline !== undefined && only.has('b')) {
  try {
    bundles.push(await buildCurrentBundle())
    console.error(`building the baseline ${values.baseline}…`)
    bundles.push(await buildBaselineBundle(values.baseline))
  } catch (err) {
    for (const b of bundles) await b.cleanup()
    throw err
  }
}
const cleanupBundles = async (): Promise<void> => { for (const b of bundles) await b.cleanup() }

let cluster: SpegelCluster
try {
  cluster = await startSpegelCluster({ nodes: 3, prefix: 'spgbench', logLevel: 'INFO' })
} catch (err) {
  await cleanupBundles()
  throw err
}
const onSignal = (): void => { void cluster.stop().finally(cleanupBundles).finally(() => process.exit(130)) }
process.once('SIGINT', onSignal)
process.once('SIGTERM', onSignal)
try {
  const out: string[] = [
    `## Peer-to-peer benchmarks (bench/p2p-pull.ts), ${cpus().length} CPUs, node ${process.version}, 3 namespace nodes with production defaults`,
    '',
  ]
  const b = only.has('b')
    ? (console.error('(b) blob throughput…'), bundles.length > 0 ? await throughputComparison(cluster, bundles) : await throughputBench(cluster))
    : []
  const c = only.has('c') ? (console.error('(c) lookup latency…'), await lookupBench(cluster)) : []
  const a = only.has('a') ? (console.error('(a) pull time…'), await pullBench(cluster)) : []
  out.push(...a, '', ...b, '', ...c)
  console.log(out.join('\n'))
} finally {
  headAgent.destroy()
  await cluster.stop()
  await cleanupBundles()
}
