// spegel-ts side by side with the real Spegel (Go), on the same kind of cluster in the same run: network-namespace
// nodes, each with its own containerd 2.x (what Talos runs) and one daemon, pulls done with CRI PullImage (the
// kubelet's path), one upstream docker-registry whose link is shaped (100 Mbit/s by default). The two implementations
// take turns on fresh clusters (ours, Go, Go, ours, …), each daemon in a memory cgroup of its own, ours as the image
// runs it (bundle, ENTRYPOINT flags, image environment).
//
// Scenarios, each on the same cluster one after the other:
//   fan-out     node 1 pulls a 3-layer image (from the upstream, through its mirror); nodes 2..N then pull it at once
//   first       nothing cached anywhere: one node pulls a new image (the mirror's misses, then the upstream)
//   cold        nothing cached anywhere: every node pulls a new image at once
//   sequential  node 1 holds a 3-layer image; nodes 2..N pull it one after the other
//   big         node 1 holds a single-layer image (1 GiB); nodes 2..4 pull it at once (upstream not shaped)
// For each: pull times (mean, slowest), upstream blob bytes after the first pull (as a multiple of the image), CPU
// seconds of every daemon (from /proc/PID/stat; start-up is reported apart), peak RSS and RssAnon per daemon (sampled
// every 250 ms), idle RSS after start, and rejections from /metrics (spegel_transfer_rejections_total, ours only; the
// herd's outcomes are printed per scenario).
//
// Needs a Spegel binary: build one outside this repository (it is never vendored), e.g.
//   tar -xzf ../shared/peers/spegel-b8c715a.tar.gz -C /tmp && cd /tmp/spegel-b8c715a && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o /tmp/spegel-go .
// and containerd 2.x (`bash .ci/setup.sh` builds .tools/bin/containerd-2.1.5).
//
//   node bench/vs-spegel.ts --spegel /tmp/spegel-go [--rounds 2] [--nodes 8] [--only fanout,first,cold,sequential,big]
//     [--image-mib 63] [--seq-mib 180] [--big-mib 1024] [--rate 100mbit] [--memory-limit 0] [--profile DIR]
//
// --memory-limit 134217728 puts every daemon under the chart's 128 Mi (0: a cgroup without a useful limit, 8 GiB).
// --profile DIR writes a CPU profile of each of our daemons (node --cpu-prof) into DIR. --impls picks the sides
// (default ts,go); --baseline REF adds a side `base`, our daemon built from git revision REF (bench/baseline.ts), so a
// change of ours is measured against the tree before it in the same run: `--impls ts,base --baseline HEAD~1`. The side
// `redirect` is this tree with --peer-redirect (containerd sent to the holder instead of a proxied stream).
// --node-flags "FLAGS" gives the side `ts` more Node flags than the image's (`--impls ts,base --baseline HEAD` then
// measures them side by side). The sequential scenario also prints each pull's CPU by daemon.
// Prints markdown.
import { rmSync } from 'node:fs'
import { access } from 'node:fs/promises'
import { dirname } from 'node:path'
import { parseArgs } from 'node:util'
import { testContainerd } from '../test/helpers/containerd.ts'
import { CriImages } from '../test/helpers/cri-images.ts'
import { buildImage, pushLargeBlobImage, pushLayout, type PushedImage } from '../test/helpers/images.ts'
import { requireNetnsSupport } from '../test/helpers/netns.ts'
import { metricsPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../test/helpers/spegel-cluster.ts'
import { buildBaselineBundle, type DaemonBundle } from './baseline.ts'
import { median, procStat } from './stats.ts'

const { values } = parseArgs({
  options: {
    spegel: { type: 'string' },
    containerd: { type: 'string', default: testContainerd().binary },
    rounds: { type: 'string', default: '2' },
    nodes: { type: 'string', default: '8' },
    only: { type: 'string', default: 'fanout,first,cold,sequential,big' },
    'image-mib': { type: 'string', default: '63' },
    'seq-mib': { type: 'string', default: '180' },
    'big-mib': { type: 'string', default: '1024' },
    rate: { type: 'string', default: '100mbit' },
    'memory-limit': { type: 'string', default: '0' },
    profile: { type: 'string' },
    'node-flags': { type: 'string', default: '' },
    impls: { type: 'string', default: 'ts,go' },
    baseline: { type: 'string' },
  },
})
const MiB = 1024 * 1024
const howToBuild = 'build one outside the repository: tar -xzf ../shared/peers/spegel-b8c715a.tar.gz -C /tmp && cd /tmp/spegel-b8c715a && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o /tmp/spegel-go . (then --spegel /tmp/spegel-go)'
const impls = values.impls.split(',') as Impl[]
for (const impl of impls) if (!['ts', 'go', 'base', 'redirect'].includes(impl)) fail(`--impls: unknown side ${impl} (ts, go, base, redirect)`)
if (impls.includes('base') && values.baseline === undefined) fail('--impls base needs --baseline REF (a git revision of this repository)')
if (impls.includes('go')) {
  if (values.spegel === undefined) fail(`--spegel PATH (a Go Spegel binary) is required: ${howToBuild}`)
  await access(values.spegel).catch(() => fail(`${values.spegel} does not exist: ${howToBuild}`))
}
await access(values.containerd).catch(() => fail(`${values.containerd} does not exist: bash .ci/setup.sh builds containerd 2.x into .tools/bin`))
requireNetnsSupport()
const rounds = Number(values.rounds)
const nodeCount = Number(values.nodes)
const only = new Set(values.only.split(','))
/** --node-flags: more Node flags for the side `ts` (after the image's); with `--impls ts,base --baseline HEAD` a V8 setting is measured side by side. */
const nodeFlags = values['node-flags'].split(' ').filter((f) => f !== '')
const limit = Number(values['memory-limit']) > 0 ? Number(values['memory-limit']) : 8 * 1024 * MiB

function fail (message: string): never {
  console.error(`vs-spegel: ${message}`)
  process.exit(2)
}

type Impl = 'ts' | 'go' | 'base' | 'redirect'
const label = (impl: Impl): string => impl === 'ts' ? 'spegel-ts' : impl === 'go' ? 'Spegel (Go)' : impl === 'redirect' ? 'spegel-ts --peer-redirect' : `spegel-ts at ${values.baseline}`
// The baseline's tree, extracted and bundled once; each of its rounds bundles it again from there, as ours does.
const baseline: DaemonBundle | undefined = impls.includes('base') ? await buildBaselineBundle(values.baseline) : undefined
// Deleted when the rounds are done; an interrupted run deletes it too (exit handlers cannot wait for an async rm).
process.once('exit', () => { if (baseline !== undefined) rmSync(dirname(dirname(baseline.cli)), { recursive: true, force: true }) })

interface Usage {
  /** CPU seconds of every daemon together. */
  cpu: number
  /** CPU seconds of node 1's daemon (the holder in fan-out, sequential and big). */
  firstCpu: number
  /** Highest VmRSS / RssAnon of any one daemon, MiB. */
  peakRss: number
  peakAnon: number
}

interface ScenarioResult {
  /** Pull durations, ms. */
  pulls: number[]
  /** Upstream blob bytes during the measured pulls, as a multiple of the image's blob bytes. */
  upstream: number
  usage: Usage
  /** Bytes the pulling nodes received (blob bytes of the image × pulling nodes). */
  moved: number
  rejections: number
}

interface RoundResult {
  impl: Impl
  idleRss: number
  idleAnon: number
  startCpu: number
  scenarios: Map<string, ScenarioResult>
}

const pids = (cluster: SpegelCluster): number[] => cluster.nodes.map((n) => {
  const pid = n.daemon?.pid
  if (pid === undefined) throw new Error(`${n.name}: daemon not running`)
  return pid
})

/** Runs `fn` while sampling every daemon; CPU is the difference over the run, memory the peaks. */
async function measured<T> (cluster: SpegelCluster, fn: () => Promise<T>): Promise<{ value: T, usage: Usage }> {
  const ps = pids(cluster)
  const before = await Promise.all(ps.map(procStat))
  let peakRss = 0
  let peakAnon = 0
  const sample = async (): Promise<void> => {
    for (const s of await Promise.all(ps.map(procStat))) {
      peakRss = Math.max(peakRss, s.rss)
      peakAnon = Math.max(peakAnon, s.anon)
    }
  }
  await sample()
  const timer = setInterval(() => { sample().catch(() => {}) }, 250)
  try {
    const value = await fn()
    await sample()
    const after = await Promise.all(ps.map(procStat))
    const cpu = after.reduce((n, s, i) => n + s.cpu - before[i]!.cpu, 0)
    return { value, usage: { cpu, firstCpu: after[0]!.cpu - before[0]!.cpu, peakRss, peakAnon } }
  } finally {
    clearInterval(timer)
  }
}

/** Sums of counters over every daemon, by metric and label set (ours only; Spegel has none of these). */
async function counters (cluster: SpegelCluster): Promise<Map<string, number>> {
  const sums = new Map<string, number>()
  for (const n of cluster.nodes) {
    const text = await fetch(`http://${n.ip}:${metricsPort}/metrics`).then(async (r) => await r.text()).catch(() => '')
    for (const line of text.split('\n')) {
      if (!['spegel_transfer_rejections_total{', 'spegel_herd_outcomes_total{', 'spegel_served_bytes_total{source="local"}', 'spegel_peer_failures_total{'].some((p) => line.startsWith(p))) continue
      const at = line.lastIndexOf(' ')
      sums.set(line.slice(0, at), (sums.get(line.slice(0, at)) ?? 0) + Number(line.slice(at + 1)))
    }
  }
  return sums
}

const rejectionsIn = (c: Map<string, number>): number => [...c].filter(([k]) => k.startsWith('spegel_transfer_rejections_total')).reduce((n, [, v]) => n + v, 0)

/** What the herd did in one scenario, all daemons together: `won 3, lost 18, held 1`. */
function herdSummary (before: Map<string, number>, after: Map<string, number>): string {
  const parts: string[] = []
  for (const [key, value] of after) {
    const outcome = /^spegel_herd_outcomes_total\{outcome="(\w+)"\}$/.exec(key)?.[1]
    const delta = value - (before.get(key) ?? 0)
    if (outcome !== undefined && delta > 0) parts.push(`${outcome} ${delta}`)
  }
  return parts.join(', ')
}

const blobBytes = (image: PushedImage): number => image.children.reduce((n, c) => n + c.size, 0)

async function push (cluster: SpegelCluster, name: string, layers: number[], gzip = true): Promise<PushedImage> {
  if (layers.length === 1 && !gzip) return await pushLargeBlobImage(cluster.upstreamHost, layers[0]!, { repository: `bench/${name}` })
  const built = await buildImage({ layers: layers.map((sizeBytes) => ({ sizeBytes, compression: gzip ? 'gzip' : 'none' })), tag: 'v1' })
  try {
    return await pushLayout(built, cluster.upstreamHost, `bench/${name}`, 'v1')
  } finally {
    await built.cleanup()
  }
}

async function waitServableEverywhere (cluster: SpegelCluster, nodes: readonly SpegelNode[], image: PushedImage): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    // By digest: Go Spegel (main, Dec 2026) answers a peer's tag with 404 on containerd 2.1 (its event handler drops
    // the image event: "received event with empty digest"), so containerd resolves tags upstream with it (a HEAD).
    await cluster.waitServable(n, image.repository, 'manifests', image.digest, { timeoutMs: 120_000 })
    for (const c of image.children) await cluster.waitServable(n, image.repository, 'blobs', c.digest, { timeoutMs: 120_000 })
  }))
}

async function timedPulls (cri: Map<SpegelNode, CriImages>, nodes: readonly SpegelNode[], ref: string): Promise<number[]> {
  return await Promise.all(nodes.map(async (n) => {
    const started = performance.now()
    await cri.get(n)!.pull(ref)
    return performance.now() - started
  }))
}

/** One round: a fresh cluster running `impl`, every scenario on it. */
async function round (impl: Impl, r: number): Promise<RoundResult> {
  const cluster = await startSpegelCluster({
    nodes: nodeCount,
    prefix: `vs${impl}`,
    containerdBinary: values.containerd,
    bootstrap: 'http',
    image: {
      memoryLimitBytes: limit,
      ...(impl === 'base' ? { root: dirname(dirname(baseline!.cli)) } : {}),
      ...(impl !== 'go' ? { extraNodeFlags: [...(impl === 'ts' ? nodeFlags : []), ...(values.profile !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`, `--cpu-prof-name=r${r}-\${pid}.cpuprofile`] : [])] } : {}),
    },
    ...(impl === 'go' ? { goSpegelBinary: values.spegel! } : {}),
    ...(impl === 'redirect' ? { daemonArgs: ['--peer-redirect=true'] } : {}),
  })
  const cri = new Map(cluster.nodes.map((n) => [n, new CriImages(n.containerd.socket)]))
  const up = cluster.net.upstream!
  const [n1, ...rest] = cluster.nodes as [SpegelNode, ...SpegelNode[]]
  const result: RoundResult = { impl, idleRss: 0, idleAnon: 0, startCpu: 0, scenarios: new Map() }
  try {
    // Idle: settled after start (bootstrap, first advertisement, the doctor's first pass).
    await new Promise((resolve) => setTimeout(resolve, 5_000))
    for (const s of await Promise.all(pids(cluster).map(procStat))) {
      result.idleRss = Math.max(result.idleRss, s.rss)
      result.idleAnon = Math.max(result.idleAnon, s.anon)
      result.startCpu += s.cpu
    }
    const scenario = async (name: string, image: PushedImage, pullers: readonly SpegelNode[], measure: () => Promise<number[]>): Promise<void> => {
      await cluster.upstream.waitForQuiet()
      cluster.upstream.resetAccessLog()
      const before = await counters(cluster)
      const { value: pulls, usage } = await measured(cluster, measure)
      await cluster.upstream.waitForQuiet()
      const upstream = cluster.upstream.blobBytesServed({ repository: image.repository }) / blobBytes(image)
      const after = await counters(cluster)
      const res: ScenarioResult = { pulls, upstream, usage, moved: blobBytes(image) * pullers.length, rejections: rejectionsIn(after) - rejectionsIn(before) }
      result.scenarios.set(name, res)
      const mean = pulls.reduce((a, b) => a + b, 0) / pulls.length
      const herd = herdSummary(before, after)
      // Ours only: bytes the holders sent for this scenario against the bytes pulled (above 1 when hedged requests
      // to a second holder were cut off after it had started sending), and failed peer requests by reason.
      const delta = (key: string): number => (after.get(key) ?? 0) - (before.get(key) ?? 0)
      const served = delta('spegel_served_bytes_total{source="local"}') / res.moved
      const failures = [...after.keys()].filter((k) => k.startsWith('spegel_peer_failures_total{') && delta(k) > 0).map((k) => `${/reason="([^"]*)"/.exec(k)?.[1] ?? k} ${delta(k)}`)
      if (impl !== 'go') console.error(`  ${label(impl)} ${name}: holders sent ${served.toFixed(2)}× the bytes pulled${failures.length > 0 ? `; peer failures: ${failures.join(', ')}` : ''}`)
      console.error(`  ${label(impl)} ${name}: mean ${(mean / 1000).toFixed(2)} s, slowest ${(Math.max(...pulls) / 1000).toFixed(2)} s, upstream ${upstream.toFixed(2)}×, cpu ${usage.cpu.toFixed(2)} s (node 1 ${usage.firstCpu.toFixed(2)} s), peak RSS ${usage.peakRss.toFixed(0)} MiB (anon ${usage.peakAnon.toFixed(0)}), rejections ${res.rejections}${herd !== '' ? `, herd: ${herd}` : ''}`)
    }
    const third = Math.round(Number(values['image-mib']) * MiB / 3)
    if (values.rate !== 'none') await cluster.net.shape(up, { rate: values.rate })
    if (only.has('fanout')) {
      const image = await push(cluster, 'fanout', [third, third, third])
      await cri.get(n1)!.pull(image.ref)
      await waitServableEverywhere(cluster, rest, image)
      await scenario('fanout', image, rest, async () => await timedPulls(cri, rest, image.ref))
    }
    if (only.has('first')) {
      const image = await push(cluster, 'first', [third, third, third])
      const last = cluster.nodes.at(-1)!
      await scenario('first', image, [last], async () => await timedPulls(cri, [last], image.ref))
    }
    if (only.has('cold')) {
      const image = await push(cluster, 'cold', [third, third, third])
      await scenario('cold', image, cluster.nodes, async () => await timedPulls(cri, cluster.nodes, image.ref))
    }
    if (only.has('sequential')) {
      const layer = Math.round(Number(values['seq-mib']) * MiB / 3)
      const image = await push(cluster, 'sequential', [layer, layer, layer])
      await cri.get(n1)!.pull(image.ref)
      await waitServableEverywhere(cluster, rest, image)
      await scenario('sequential', image, rest, async () => {
        const times: number[] = []
        const split: string[] = []
        const perNode: string[] = []
        for (const n of rest) {
          // Each pull's CPU by daemon: the puller's own, node 1's (the holder; a later puller may also fetch from an
          // earlier one) and the others' together.
          const before = await Promise.all(pids(cluster).map(procStat))
          times.push(...await timedPulls(cri, [n], image.ref))
          const spent = (await Promise.all(pids(cluster).map(procStat))).map((s, i) => s.cpu - (before[i]?.cpu ?? 0))
          const at = cluster.nodes.indexOf(n)
          const others = spent.reduce((sum, c, i) => i === 0 || i === at ? sum : sum + c, 0)
          split.push(`${(spent[at] ?? 0).toFixed(2)}/${(spent[0] ?? 0).toFixed(2)}/${others.toFixed(2)}`)
          perNode.push(spent.map((c) => c.toFixed(2)).join(' '))
        }
        console.error(`  ${label(impl)} sequential CPU s per pull, puller/node 1/others: ${split.join(' ')}`)
        for (const [i, line] of perNode.entries()) console.error(`    pull by node ${i + 2}, CPU s of nodes 1–${cluster.nodes.length}: ${line}`)
        return times
      })
    }
    if (values.rate !== 'none') await cluster.net.unshape(up)
    if (only.has('big')) {
      const image = await push(cluster, 'big', [Number(values['big-mib']) * MiB], false)
      await cri.get(n1)!.pull(image.ref)
      const pullers = rest.slice(0, 3)
      await waitServableEverywhere(cluster, pullers, image)
      await scenario('big', image, pullers, async () => await timedPulls(cri, pullers, image.ref))
    }
    return result
  } finally {
    for (const c of cri.values()) c.close()
    await cluster.stop()
  }
}

const results: RoundResult[] = []
for (let r = 0; r < rounds; r++) {
  // ts, go | go, ts | …: neither always runs first on a machine that warms up.
  const order = r % 2 === 0 ? impls : [...impls].reverse()
  for (const impl of order) {
    console.error(`round ${r + 1}: ${label(impl)}`)
    results.push(await round(impl, r))
  }
}
await baseline?.cleanup()

// ---- report ----
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
const fmt = (x: number, d = 2): string => Number.isFinite(x) ? x.toFixed(d) : '–'
const range = (xs: number[], d = 2): string => xs.length === 0 ? '–' : Math.min(...xs) === Math.max(...xs) ? fmt(xs[0]!, d) : `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`
const of = (impl: Impl): RoundResult[] => results.filter((x) => x.impl === impl)
const per = (impl: Impl, name: string, f: (s: ScenarioResult) => number): number[] => of(impl).flatMap((x) => { const s = x.scenarios.get(name); return s === undefined ? [] : [f(s)] })
/** Ours ÷ `other`, medians over rounds. */
const ratio = (other: Impl, name: string, f: (s: ScenarioResult) => number): string => fmt(median(per('ts', name, f)) / median(per(other, name, f))) + '×'
// Columns: every side measured, ours first; then ours ÷ each other side.
const sides = (['ts', 'redirect', 'base', 'go'] as const).filter((i) => impls.includes(i))
const others = sides.filter((i) => i !== 'ts' && impls.includes('ts'))
const gib = 1024 * MiB
console.log(`${rounds} rounds, ${nodeCount} nodes, containerd ${values.containerd}, CRI pulls, upstream ${values.rate}, memory limit per daemon ${limit >= 8 * gib ? 'none (8 GiB cgroup)' : `${limit / MiB} MiB`}, node ${process.version}`)
console.log('')
const ratioName = (other: Impl): string => other === 'go' ? 'ours ÷ Go (medians)' : other === 'redirect' ? 'ours ÷ --peer-redirect (medians)' : `ours ÷ ${values.baseline} (medians)`
console.log(`| measurement (range over rounds) | ${sides.map(label).join(' | ')} | ${others.map(ratioName).join(' | ')} |`)
console.log(`|---|${sides.map(() => '---|').join('')}${others.map(() => '---|').join('')}`)
const names: Record<string, string> = {
  fanout: `fan-out: node 1 holds a ${values['image-mib']} MB 3-layer image, nodes 2–${nodeCount} pull at once`,
  first: `first pull: one node pulls a new ${values['image-mib']} MB image nobody holds (through its mirror, then the upstream)`,
  cold: `cold: every node pulls a new ${values['image-mib']} MB image at once`,
  sequential: `sequential: nodes 2–${nodeCount} one after another pull a ${values['seq-mib']} MB image node 1 holds`,
  big: `big: node 1 holds a ${values['big-mib']} MiB layer, nodes 2–4 pull at once`,
}
for (const name of ['fanout', 'first', 'cold', 'sequential', 'big']) {
  if (!only.has(name)) continue
  const row = (what: string, f: (s: ScenarioResult) => number, d = 2, showRatio = true): void => {
    console.log(`| ${what} | ${sides.map((i) => range(per(i, name, f), d)).join(' | ')} | ${others.map((o) => showRatio ? ratio(o, name, f) : '').join(' | ')} |`)
  }
  row(`${names[name]}: mean s`, (s) => mean(s.pulls) / 1000)
  row('… slowest s', (s) => Math.max(...s.pulls) / 1000)
  row('… upstream blob bytes (× the image)', (s) => s.upstream, 2, false)
  row('… CPU s of all daemons', (s) => s.usage.cpu)
  row('… CPU s per GiB moved', (s) => s.usage.cpu / (s.moved / gib))
  row('… CPU s of node 1 (the holder, but in first and cold)', (s) => s.usage.firstCpu)
  row('… peak RSS of a daemon, MiB', (s) => s.usage.peakRss, 0)
  row('… peak RssAnon of a daemon, MiB', (s) => s.usage.peakAnon, 0)
  row('… transfers refused (429/404 for want of memory)', (s) => s.rejections, 0, false)
}
const idle = (impl: Impl, f: (x: RoundResult) => number): number[] => of(impl).map(f)
const idleRow = (what: string, f: (x: RoundResult) => number, d: number): void => {
  console.log(`| ${what} | ${sides.map((i) => range(idle(i, f), d)).join(' | ')} | ${others.map(() => '').join(' | ')} |`)
}
idleRow('idle RSS of a daemon after start, MiB (highest)', (x) => x.idleRss, 0)
idleRow('idle RssAnon, MiB', (x) => x.idleAnon, 0)
idleRow('CPU s of all daemons from start to settled (5 s)', (x) => x.startCpu, 2)
