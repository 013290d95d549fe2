// Rollout benchmark of issue 11 ("when every node pulls the same new image at once, upstream serves it about once"),
// herd protection on and off side by side in one run, on a cluster of network-namespace nodes
// (test/helpers/spegel-cluster.ts: containerd and `spegel registry` per node, one docker-registry upstream whose link
// is shaped with tc tbf).
//
// Each round runs both settings, in alternating order (on, off; then off, on; …); before each, every daemon is
// restarted with `--herd-protection=true|false` and the cluster's DHT is checked to connect every node. Then, each time
// with never-seen images (random layers, pushed before the link is shaped):
//   alone   one node pulls a ~60 MB three-layer image with nobody else pulling: the upstream's pace for one node;
//   herd    every node pulls another such image at the same instant: the slowest node's pull time against `alone`
//           (target ≤ 1.3×), and the upstream's GET blob bytes as a multiple of the image's blob bytes (target ≤ 1.1×);
//   miss    the cost of herd protection when there is no herd: a node's mirror is asked (GET, as containerd asks) for
//           never-seen blobs nobody else wants, timed to the response headers (what containerd waits before it falls
//           back to the upstream); and one node pulls small never-seen images (four blobs each) alone, one after the
//           other. Target: tens of ms at most per blob over herd protection off.
// Pulls use CRI PullImage, as the kubelet (`--client ctr` for `ctr images pull`).
//
//   node bench/herd.ts [--nodes 4] [--rounds 3] [--image-mib 60] [--rate 100mbit] [--client cri|ctr] [--miss-keys 30]
//                      [--small-pulls 3]
//
// Until the daemon has `--herd-protection` (checked in `spegel registry --help`) both settings run without the flag,
// and the table says so. Needs root and the Debian packages containerd, docker-registry, skopeo and iproute2. Prints a
// markdown summary on stdout, progress on stderr.
import http from 'node:http'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { makeImage, writeOciArchive } from '../test/helpers/containerd.ts'
import { CriImages } from '../test/helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../test/helpers/images.ts'
import { requireNetnsSupport } from '../test/helpers/netns.ts'
import { startSpegelCluster, type SpegelCluster, type SpegelNode } from '../test/helpers/spegel-cluster.ts'
import { runSpegel } from '../test/helpers/spegel.ts'
import { median, quantile, secs } from './stats.ts'

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '3' },
    'image-mib': { type: 'string', default: '60' },
    rate: { type: 'string', default: '100mbit' },
    client: { type: 'string', default: 'cri' },
    'miss-keys': { type: 'string', default: '30' },
    'small-pulls': { type: 'string', default: '3' },
  },
})
const MiB = 1024 * 1024
const nodeCount = Number(values.nodes)
const rounds = Number(values.rounds)
const layerBytes = Math.round(Number(values['image-mib']) * MiB / 3)
const rate = values.rate
const client = values.client
const missKeys = Number(values['miss-keys'])
const smallPulls = Number(values['small-pulls'])
if (client !== 'cri' && client !== 'ctr') throw new Error(`--client must be cri or ctr, not ${client}`)
if (!(nodeCount >= 2) || !(rounds >= 1)) throw new Error('--nodes ≥ 2 and --rounds ≥ 1')
/** Layers of the small image a lone node pulls (plus its config: four blobs). */
const smallLayers = [1 * MiB, 1 * MiB, 1 * MiB]
/** Unmeasured mirror requests after each restart: a fresh daemon runs unoptimised code at first. */
const warmupKeys = 5
const pullTimeoutMs = 600_000

requireNetnsSupport()

type Setting = 'on' | 'off'

const times = (x: number): string => `${x.toFixed(2)}×`

const help = await runSpegel(['registry', '--help'], { allowNonZero: true })
const flagSupported = (help.stdout + help.stderr).includes('--herd-protection')
const argsFor = (setting: Setting): string[] => flagSupported ? [`--herd-protection=${setting === 'on'}`] : []

async function pushImage (cluster: SpegelCluster, repository: string, layers: readonly number[]): Promise<PushedImage> {
  const built = await buildImage({ layers: layers.map((sizeBytes) => ({ sizeBytes })), tag: 'v1' })
  try {
    return await pushLayout(built, cluster.upstreamHost, repository, 'v1')
  } finally {
    await built.cleanup()
  }
}

const blobBytesOf = (image: PushedImage): number => image.children.reduce((n, c) => n + c.size, 0)

/** GET through a mirror, as containerd asks for a blob; ms to the response headers, then the body is dropped. */
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
async function timeToHeaders (url: string): Promise<{ ms: number, status: number }> {
  const started = performance.now()
  return await new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'GET', agent, signal: AbortSignal.timeout(30_000) }, (res) => {
      const ms = performance.now() - started
      res.resume()
      res.once('end', () => { resolve({ ms, status: res.statusCode ?? 0 }) })
      res.once('error', reject)
    })
    req.once('error', reject)
    req.end()
  })
}

interface RoundResult {
  setting: Setting
  round: number
  aloneMs: number
  aloneMultiple: number
  herdMs: number[]
  herdMultiple: number
  /** Nodes the upstream sent blob bytes to during the herd. */
  herdClients: number
  missMs: number[]
  missStatuses: Map<number, number>
  /** One per small image. */
  smallPullMs: number[]
}

async function main (cluster: SpegelCluster): Promise<string[]> {
  const nodes = cluster.nodes
  const [n1] = nodes as [SpegelNode]
  const cri = new Map(nodes.map((n) => [n, new CriImages(n.containerd.socket)]))
  const pull = async (node: SpegelNode, ref: string): Promise<number> => {
    const started = performance.now()
    if (client === 'cri') await cri.get(node)!.pull(ref, pullTimeoutMs)
    else await node.pull(ref, { timeoutMs: pullTimeoutMs })
    return performance.now() - started
  }
  const forget = async (image: PushedImage): Promise<void> => {
    await Promise.all(nodes.map(async (n) => {
      if (client === 'cri') await cri.get(n)!.remove(image.ref).catch(() => {})
      await n.forget([image.ref], [image.digest, ...image.children.map((c) => c.digest)])
    }))
  }
  const upstreamMultiple = async (image: PushedImage): Promise<{ multiple: number, clients: number }> => {
    await cluster.upstream.waitForQuiet({ quietMs: 1000 })
    const clients = new Set(cluster.upstream.accessLog()
      .filter((e) => e.method === 'GET' && e.repository === image.repository && e.path.includes('/blobs/') && e.bytes > 0)
      .map((e) => e.remoteAddr.replace(/:\d+$/, '')))
    return { multiple: cluster.upstream.blobBytesServed({ repository: image.repository }) / blobBytesOf(image), clients: clients.size }
  }

  // A small image only node 1 holds: once every node's mirror finds it, the restarted DHT connects every node.
  const canary = makeImage(`${cluster.upstreamHost}/bench/canary:v1`, { layerSizes: [1024] })
  const canaryArchive = join(n1.containerd.dir, 'canary.tar')
  await writeOciArchive(canaryArchive, [canary])
  await n1.ctr(['images', 'import', '--no-unpack', canaryArchive])
  const restart = async (setting: Setting): Promise<void> => {
    await Promise.all(nodes.map(async (n) => { await n.stopDaemon() }))
    // Node 1 first: it is everyone's bootstrap peer.
    await n1.startDaemon({ daemonArgs: argsFor(setting) })
    await Promise.all(nodes.slice(1).map(async (n) => { await n.startDaemon({ daemonArgs: argsFor(setting) }) }))
    for (const n of nodes.slice(1)) await cluster.waitServable(n, 'bench/canary', 'manifests', 'v1', { timeoutMs: 60_000 })
  }

  // Every image is pushed before the link is shaped (shaping limits what the upstream sends).
  console.error(`pushing ${rounds * 2} × 2 images of ${values['image-mib']} MiB and the small ones…`)
  const plan: Array<{ setting: Setting, round: number, alone: PushedImage, herd: PushedImage, small: PushedImage[], keys: PushedImage }> = []
  for (let r = 0; r < rounds; r++) {
    const order: Setting[] = r % 2 === 0 ? ['on', 'off'] : ['off', 'on']
    for (const setting of order) {
      const id = `${setting}-${r + 1}`
      plan.push({
        setting,
        round: r + 1,
        alone: await pushImage(cluster, `herd/alone-${id}`, [layerBytes, layerBytes, layerBytes]),
        herd: await pushImage(cluster, `herd/herd-${id}`, [layerBytes, layerBytes, layerBytes]),
        small: await Promise.all(Array.from({ length: smallPulls }, async (_, k) => await pushImage(cluster, `herd/small-${id}-${k + 1}`, smallLayers))),
        keys: await pushImage(cluster, `herd/keys-${id}`, Array.from({ length: missKeys + warmupKeys }, () => 1024)),
      })
    }
  }
  const upstreamMember = cluster.net.upstream
  if (upstreamMember === undefined) throw new Error('no upstream namespace')
  if (rate !== 'none') await cluster.net.shape(upstreamMember, { rate })

  const results: RoundResult[] = []
  try {
    for (const [i, step] of plan.entries()) {
      console.error(`round ${step.round}, herd protection ${step.setting}: restarting ${nodeCount} daemons…`)
      await restart(step.setting)
      // A different lone node each time, so no node's disk or cache is favoured.
      const lone = nodes[i % nodes.length]!

      const aloneMs = await pull(lone, step.alone.ref)
      const alone = await upstreamMultiple(step.alone)

      const herdMs = await Promise.all(nodes.map(async (n) => await pull(n, step.herd.ref)))
      const herd = await upstreamMultiple(step.herd)

      const layers = step.keys.manifests[0]!.layers.map((l) => l.digest)
      const url = (digest: string): string => `${lone.mirrorUrl}/v2/${step.keys.repository}/blobs/${digest}?ns=${encodeURIComponent(cluster.upstreamHost)}`
      for (const digest of layers.slice(0, warmupKeys)) await timeToHeaders(url(digest))
      const missMs: number[] = []
      const missStatuses = new Map<number, number>()
      for (const digest of layers.slice(warmupKeys)) {
        const { ms, status } = await timeToHeaders(url(digest))
        missMs.push(ms)
        missStatuses.set(status, (missStatuses.get(status) ?? 0) + 1)
      }
      const smallPullMs: number[] = []
      for (const image of step.small) smallPullMs.push(await pull(lone, image.ref))

      const result: RoundResult = {
        setting: step.setting, round: step.round, aloneMs, aloneMultiple: alone.multiple, herdMs, herdMultiple: herd.multiple,
        herdClients: herd.clients, missMs, missStatuses, smallPullMs,
      }
      results.push(result)
      console.error(`  ${lone.name} alone ${secs(aloneMs)} s (${times(alone.multiple)}); herd slowest ${secs(Math.max(...herdMs))} s [${herdMs.map(secs).join(', ')}], upstream ${times(herd.multiple)} to ${herd.clients} node(s); miss p50 ${quantile(missMs, 0.5).toFixed(1)} ms; small images ${smallPullMs.map(secs).join(', ')} s`)
      for (const image of [step.alone, step.herd, ...step.small]) await forget(image)
    }
  } finally {
    for (const c of cri.values()) c.close()
    if (rate !== 'none') await cluster.net.unshape(upstreamMember)
  }

  const of = (setting: Setting): RoundResult[] => results.filter((r) => r.setting === setting)
  const col = (setting: Setting, f: (rs: RoundResult[]) => string): string => f(of(setting))
  const list = (rs: RoundResult[], g: (r: RoundResult) => number, fmt: (x: number) => string): string => `**${fmt(median(rs.map(g)))}** (${rs.map((r) => fmt(g(r))).join(', ')})`
  const slowest = (r: RoundResult): number => Math.max(...r.herdMs)
  const allMiss = (rs: RoundResult[]): number[] => rs.flatMap((r) => r.missMs)
  const statuses = (rs: RoundResult[]): string => {
    const total = new Map<number, number>()
    for (const r of rs) for (const [s, n] of r.missStatuses) total.set(s, (total.get(s) ?? 0) + n)
    return [...total].map(([s, n]) => `${n}× ${s}`).join(', ')
  }
  const row = (what: string, f: (rs: RoundResult[]) => string, target = ''): string => `| ${what} | ${col('on', f)} | ${col('off', f)} | ${target} |`
  const missP50 = (s: Setting): number => quantile(allMiss(of(s)), 0.5)
  const smallMedian = (s: Setting): number => median(of(s).flatMap((r) => r.smallPullMs))
  const smallBlobs = smallLayers.length + 1
  const imageMiB = (blobBytesOf(plan[0]!.herd) / MiB).toFixed(0)
  return [
    `## Rollout: ${nodeCount} nodes pull the same never-seen image at once (bench/herd.ts)`,
    '',
    `${cpus().length} CPUs, ${(totalmem() / 1024 ** 3).toFixed(0)} GiB, node ${process.version}; ${nodeCount} namespace nodes, upstream link ${rate}, ${imageMiB} MiB three-layer gzip images, pulls with ${client === 'cri' ? 'CRI PullImage' : '`ctr images pull`'}; ${rounds} round(s) per setting, alternating order; medians, rounds in brackets.`,
    ...(flagSupported ? [] : ['', '**The daemon has no `--herd-protection` flag yet: both columns ran the same daemon without it (today\'s behaviour).**']),
    '',
    '| | herd protection on | herd protection off | target (on) |',
    '|---|---|---|---|',
    row(`upstream GET blob bytes / image, all ${nodeCount} nodes at once`, (rs) => list(rs, (r) => r.herdMultiple, times), '≤ 1.1×'),
    row('nodes the upstream sent blobs to (herd)', (rs) => rs.map((r) => r.herdClients).join(', ')),
    row('slowest node\'s pull in the herd, s', (rs) => list(rs, slowest, secs)),
    row('one node pulling alone from the upstream, s', (rs) => list(rs, (r) => r.aloneMs, secs)),
    row('slowest in the herd / alone (same round)', (rs) => list(rs, (r) => slowest(r) / r.aloneMs, times), '≤ 1.3×'),
    row('upstream bytes / image, one node alone', (rs) => list(rs, (r) => r.aloneMultiple, times), '1.00×'),
    row(`lone cold miss: the mirror's answer to a GET of a never-seen blob (${missKeys} keys per round), p50 / p99 / max ms`, (rs) => { const xs = allMiss(rs); return `${quantile(xs, 0.5).toFixed(1)} / ${quantile(xs, 0.99).toFixed(1)} / ${Math.max(...xs).toFixed(1)} (${statuses(rs)})` }),
    row(`lone cold miss: one node pulls a small never-seen image alone (${smallBlobs} blobs; ${smallPulls} per round), s`, (rs) => `**${secs(median(rs.flatMap((r) => r.smallPullMs)))}** (${rs.flatMap((r) => r.smallPullMs).map(secs).join(', ')})`),
    '',
    `Added by herd protection to a lone cold miss: **${(missP50('on') - missP50('off')).toFixed(1)} ms** per blob at the mirror (p50, on − off); the small image's pull ${((smallMedian('on') - smallMedian('off'))).toFixed(0)} ms in all, ${((smallMedian('on') - smallMedian('off')) / smallBlobs).toFixed(0)} ms per blob (medians; pull-to-pull noise is tens of ms). Target: tens of ms at most per blob.`,
  ]
}

const cluster = await startSpegelCluster({ nodes: nodeCount, prefix: 'spgherdb', logLevel: 'INFO' })
const onSignal = (): void => { void cluster.stop().finally(() => process.exit(130)) }
process.once('SIGINT', onSignal)
process.once('SIGTERM', onSignal)
try {
  console.log((await main(cluster)).join('\n'))
} finally {
  agent.destroy()
  await cluster.stop()
}
