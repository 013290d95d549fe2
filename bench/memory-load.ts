// Peak RSS against the number of concurrent transfers (issue 8). Three namespace nodes run the daemon as the container
// image runs it (test/helpers/spegel-cluster.ts with `image`: the bundle, the ENTRYPOINT's node flags, the image's
// environment, a memory cgroup per daemon). Node 1 holds one ~63 MB layer; nodes 2 and 3 hold another, which node 1
// proxies from them. For N = 1, 2, 4 … 128 slow clients at once (curl --limit-rate 2M, each stopped by its own
// --max-time, which still prints its figures, or at the end of the body), on node 1:
//   - local blob, containerd-like requesters (no X-Spegel-Mirrored header: they wait up to 2 s for room, then 404),
//   - local blob, peer-like requesters (X-Spegel-Mirrored: true: 429 at once when there is no room),
//   - proxied blob, containerd-like requesters (node 1 fetches from node 2 or 3 for each one).
// Each step records node 1's VmRSS just before it, the highest VmRSS sampled every 20 ms during it (VmHWM cannot be
// reset) with RssAnon in that same sample, the transfer memory reserved halfway through (from /metrics), how many
// clients got 200 and how many a refusal and how long the refusals took, and the aggregate MiB/s. Steps are 3 s apart
// (the buffer pool gives its buffers back 2 s after the last transfer); node 1's RSS is also taken 3 s after the
// last step.
//
// Two configurations, one cluster after the other: `--transfer-memory=auto` in 128 MiB cgroups (the chart's default
// limit; a 16 MiB budget), and `--transfer-memory=2Gi` in 1 GiB cgroups, which is practically no budget and shows
// what the daemon would take without one (the larger cgroup keeps it from being OOM-killed meanwhile). Without a
// budget nobody is refused, so peer-like requesters take the same path as containerd-like ones: that row is left out
// of the second configuration unless `--kinds` asks for it.
//
//   node bench/memory-load.ts [--clients 1,2,4,8,16,32,64,128] [--seconds 6] [--pause 3] [--rate 2M] [--layer-mib 60]
//                             [--configs budgeted,unbudgeted] [--kinds local-node,local-peer,proxied-node]
//
// Needs root, cgroup v1's memory controller, and the Debian packages containerd, docker-registry, skopeo, iproute2 and
// curl. Prints markdown tables (progress on stderr); docs/benchmarks.md records a run.
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { requireMemoryCgroupV1 } from '../test/helpers/cgroup.ts'
import { pushLargeBlobImage, type PushedImage } from '../test/helpers/images.ts'
import { requireNetnsSupport } from '../test/helpers/netns.ts'
import { run } from '../test/helpers/process.ts'
import { metricsPort, registryPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../test/helpers/spegel-cluster.ts'
import { requireTool } from '../test/helpers/tools.ts'
import { median } from './stats.ts'

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '1,2,4,8,16,32,64,128' },
    seconds: { type: 'string', default: '6' },
    pause: { type: 'string', default: '3' },
    rate: { type: 'string', default: '2M' },
    'layer-mib': { type: 'string', default: '60' },
    configs: { type: 'string', default: 'budgeted,unbudgeted' },
    kinds: { type: 'string' },
  },
})
const MiB = 1024 * 1024
const clientCounts = values.clients.split(',').map(Number)
const seconds = Number(values.seconds)
const pauseMs = Number(values.pause) * 1000
const layerBytes = Number(values['layer-mib']) * MiB

interface Config {
  name: 'budgeted' | 'unbudgeted'
  label: string
  memoryLimitBytes: number
  transferMemory: string
  kinds: readonly Kind[]
}

type Kind = 'local-node' | 'local-peer' | 'proxied-node'
const kindLabels: Record<Kind, string> = {
  'local-node': 'local blob, containerd-like',
  'local-peer': 'local blob, peer-like',
  'proxied-node': 'proxied blob, containerd-like',
}
const allKinds: readonly Kind[] = ['local-node', 'local-peer', 'proxied-node']
const askedKinds = values.kinds?.split(',') as Kind[] | undefined
for (const k of askedKinds ?? []) if (!allKinds.includes(k)) throw new Error(`--kinds: unknown kind ${k} (${allKinds.join(', ')})`)

const configs: Config[] = [
  { name: 'budgeted', label: '128 MiB cgroup, --transfer-memory=auto', memoryLimitBytes: 128 * MiB, transferMemory: 'auto', kinds: askedKinds ?? allKinds },
  // Nobody is refused without a budget, so a peer-like requester would repeat the containerd-like row.
  { name: 'unbudgeted', label: '1 GiB cgroup, --transfer-memory=2Gi', memoryLimitBytes: 1024 * MiB, transferMemory: '2Gi', kinds: askedKinds ?? ['local-node', 'proxied-node'] },
]
const chosen = configs.filter((c) => values.configs.split(',').includes(c.name))

requireNetnsSupport()
requireMemoryCgroupV1()
const curl = requireTool('curl', 'apt-get install -y curl')

const mib = (bytes: number): string => (bytes / MiB).toFixed(1)
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

// ---------------------------------------------------------------------------------------------------------------
// node 1's memory

interface Memory {
  rssKiB: number
  anonKiB: number
  hwmKiB: number
}

async function memoryOf (pid: number): Promise<Memory | undefined> {
  let status: string
  try {
    status = await readFile(`/proc/${pid}/status`, 'utf8')
  } catch {
    return undefined
  }
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0)
  return { rssKiB: kib('VmRSS'), anonKiB: kib('RssAnon'), hwmKiB: kib('VmHWM') }
}

/** Samples a process's VmRSS every 20 ms and keeps the highest, with RssAnon of that same sample. */
class PeakSampler {
  private readonly pid: number
  private timer: NodeJS.Timeout | undefined
  private busy = false
  peak: Memory = { rssKiB: 0, anonKiB: 0, hwmKiB: 0 }
  samples = 0

  constructor (pid: number) {
    this.pid = pid
  }

  start (): void {
    this.timer = setInterval(() => { void this.sample() }, 20)
  }

  async stop (): Promise<Memory> {
    clearInterval(this.timer)
    await this.sample()
    return this.peak
  }

  private async sample (): Promise<void> {
    if (this.busy) return
    this.busy = true
    try {
      const m = await memoryOf(this.pid)
      if (m === undefined) return
      this.samples++
      if (m.rssKiB > this.peak.rssKiB) this.peak = m
    } finally {
      this.busy = false
    }
  }
}

/** One sample of a Prometheus text exposition; labels exactly as the daemon writes them. */
async function metric (node: SpegelNode, name: string, labels = ''): Promise<number> {
  const res = await fetch(`http://${node.ip}:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) })
  const text = await res.text()
  let sum = 0
  for (const line of text.split('\n')) {
    // Without labels: the sum over every series of the name (e.g. all rejections).
    if (labels === '' ? (line.startsWith(name + ' ') || line.startsWith(name + '{')) : line.startsWith(name + labels + ' ')) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

// ---------------------------------------------------------------------------------------------------------------
// clients

interface ClientResult {
  status: number
  bytes: number
  /** curl's exit code: 0 done, 28 stopped by --max-time. */
  exit: number
  totalS: number
}

/** A slow client: curl --limit-rate, ended by --max-time (curl still prints the write-out) or by the end of the body. */
async function slowClient (url: string, peerLike: boolean): Promise<ClientResult> {
  const res = await run(curl, [
    '-s', '-o', '/dev/null', '--limit-rate', values.rate, '--max-time', String(seconds),
    ...(peerLike ? ['-H', 'X-Spegel-Mirrored: true'] : []),
    '-w', '%{http_code} %{size_download} %{exitcode} %{time_total}', url,
  ], { allowNonZero: true, timeoutMs: (seconds + 20) * 1000 })
  const [status, bytes, exit, totalS] = res.stdout.trim().split(' ').map(Number)
  return { status: status ?? 0, bytes: bytes ?? 0, exit: exit ?? -1, totalS: totalS ?? NaN }
}

// ---------------------------------------------------------------------------------------------------------------
// steps

interface StepResult {
  kind: Kind
  clients: number
  before: Memory
  peak: Memory
  samples: number
  served: number
  /** Refusals by status. */
  refused: Record<number, number>
  refusalS: number[]
  /** Anything but 200 (stopped by --max-time or complete), 404 or 429. */
  odd: string[]
  mibPerS: number
  /** spegel_transfer_buffer_bytes{state="reserved"} halfway through the step. */
  reservedMid: number
  rejections: number
  died: string | undefined
}

interface Blob { repository: string, digest: string, size: number, path: string }

async function step (cluster: SpegelCluster, kind: Kind, blob: Blob, clients: number): Promise<StepResult> {
  const n1 = cluster.nodes[0]!
  const pid = n1.daemon?.pid
  if (pid === undefined) throw new Error('node 1 has no daemon')
  const before = await memoryOf(pid) ?? { rssKiB: 0, anonKiB: 0, hwmKiB: 0 }
  const rejectionsBefore = await metric(n1, 'spegel_transfer_rejections_total')
  const sampler = new PeakSampler(pid)
  sampler.start()
  const url = `http://${n1.ip}:${registryPort}${blob.path}`
  const started = performance.now()
  const running = Array.from({ length: clients }, async () => await slowClient(url, kind === 'local-peer'))
  await sleep(seconds * 500)
  const reservedMid = await metric(n1, 'spegel_transfer_buffer_bytes', '{state="reserved"}').catch(() => NaN)
  const results = await Promise.all(running)
  const wallS = (performance.now() - started) / 1000
  const peak = await sampler.stop()
  const died = n1.daemon?.exitStatus !== undefined
    ? `exit code ${String(n1.daemon.exitStatus.code)} signal ${String(n1.daemon.exitStatus.signal)}, oom_kill ${(await n1.cgroup?.oomControl())?.oomKill ?? '?'}`
    : undefined
  const refusedResults = results.filter((r) => r.status === 404 || r.status === 429)
  const refused: Record<number, number> = {}
  for (const r of refusedResults) refused[r.status] = (refused[r.status] ?? 0) + 1
  const odd = results.filter((r) => !(r.status === 200 && (r.exit === 0 || r.exit === 28)) && r.status !== 404 && r.status !== 429)
    .map((r) => `status ${r.status} exit ${r.exit} after ${r.totalS} s`)
  return {
    kind,
    clients,
    before,
    peak,
    samples: sampler.samples,
    served: results.filter((r) => r.status === 200).length,
    refused,
    refusalS: refusedResults.map((r) => r.totalS),
    odd,
    mibPerS: results.reduce((s, r) => s + (r.status === 200 ? r.bytes : 0), 0) / MiB / wallS,
    reservedMid,
    rejections: died === undefined ? await metric(n1, 'spegel_transfer_rejections_total') - rejectionsBefore : NaN,
    died,
  }
}

interface ConfigResult {
  config: Config
  budgetBytes: number
  steps: StepResult[]
  /** Node 1, `pause` after the last step. */
  after: Memory
  pooledAfter: number
  /** Node 1's VmHWM at the end (its lifetime peak). */
  hwmKiB: number
  oomKills: string
  layerSize: number
}

async function runConfig (config: Config): Promise<ConfigResult> {
  console.error(`${config.label}: starting the cluster`)
  const cluster = await startSpegelCluster({
    nodes: 3,
    prefix: config.name === 'budgeted' ? 'spgmemb' : 'spgmemu',
    image: { memoryLimitBytes: config.memoryLimitBytes, nofile: 65_536 },
    // A generous resolve timeout: on a loaded 2-core machine a lookup can exceed the 20 ms default.
    daemonArgs: ['--mirror-resolve-timeout=2s', `--transfer-memory=${config.transferMemory}`],
  })
  try {
    const [n1, n2, n3] = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
    const blobOf = (image: PushedImage): Blob => {
      const layer = image.manifests[0]?.layers[0]
      if (layer === undefined) throw new Error(`${image.ref} has no layer`)
      return { repository: image.repository, digest: layer.digest, size: layer.size, path: `/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstreamHost)}` }
    }
    const localImage = await pushLargeBlobImage(cluster.upstreamHost, layerBytes, { repository: 'memload/local' })
    const proxiedImage = await pushLargeBlobImage(cluster.upstreamHost, layerBytes, { repository: 'memload/proxied' })
    const local = blobOf(localImage)
    const proxied = blobOf(proxiedImage)
    await Promise.all([
      n1.pull(localImage.ref, { contentOnly: true, mirrors: false }),
      n2.pull(proxiedImage.ref, { contentOnly: true, mirrors: false }),
      n3.pull(proxiedImage.ref, { contentOnly: true, mirrors: false }),
    ])
    await cluster.waitServable(n1, local.repository, 'blobs', local.digest)
    await cluster.waitServable(n1, proxied.repository, 'blobs', proxied.digest, { timeoutMs: 60_000 })
    const budgetBytes = await metric(n1, 'spegel_transfer_budget_bytes')
    console.error(`${config.label}: node 1's transfer budget ${mib(budgetBytes)} MiB`)
    const steps: StepResult[] = []
    for (const kind of config.kinds) {
      for (const clients of clientCounts) {
        await sleep(pauseMs)
        const s = await step(cluster, kind, kind === 'proxied-node' ? proxied : local, clients)
        steps.push(s)
        console.error(`  ${kind} N=${clients}: RSS ${mib(s.before.rssKiB * 1024)} -> peak ${mib(s.peak.rssKiB * 1024)} MiB (anon ${mib(s.peak.anonKiB * 1024)}), ` +
          `served ${s.served}, refused ${JSON.stringify(s.refused)}, ${s.mibPerS.toFixed(0)} MiB/s, reserved mid-step ${mib(s.reservedMid)} MiB` +
          `${s.odd.length > 0 ? `, odd: ${s.odd.join('; ')}` : ''}${s.died !== undefined ? `, DIED: ${s.died}` : ''}`)
        if (s.died !== undefined) {
          // Started again so the remaining steps still measure something; the row says what happened.
          await n1.startDaemon({ bootstrapPeers: [n2.routerAddr] })
          await cluster.waitServable(n1, proxied.repository, 'blobs', proxied.digest, { timeoutMs: 60_000 })
        }
      }
    }
    await sleep(pauseMs)
    const pid = n1.daemon?.pid
    const after = (pid !== undefined ? await memoryOf(pid) : undefined) ?? { rssKiB: NaN, anonKiB: NaN, hwmKiB: NaN }
    const pooledAfter = await metric(n1, 'spegel_transfer_buffer_bytes', '{state="pooled"}')
    const oomKills = (await Promise.all(cluster.nodes.map(async (n) => `${n.name} ${(await n.cgroup?.oomControl())?.oomKill ?? '?'}`))).join(', ')
    console.error(`${config.label}: ${pauseMs / 1000} s after the last step RSS ${mib(after.rssKiB * 1024)} MiB (anon ${mib(after.anonKiB * 1024)}), pooled ${mib(pooledAfter)} MiB; VmHWM ${mib(after.hwmKiB * 1024)} MiB; oom_kill ${oomKills}`)
    return { config, budgetBytes, steps, after, pooledAfter, hwmKiB: after.hwmKiB, oomKills, layerSize: local.size }
  } finally {
    await cluster.stop()
  }
}

// ---------------------------------------------------------------------------------------------------------------

function detailTable (r: ConfigResult): string[] {
  const lines = [
    `### ${r.config.label} (node 1's budget ${mib(r.budgetBytes)} MiB)`,
    '',
    '| requesters | N | served (200) | refused | refusals took, s (median / max) | MiB/s | RSS before, MiB | peak RSS, MiB | anon at peak | reserved halfway, MiB |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for (const s of r.steps) {
    const refused = Object.entries(s.refused).map(([status, n]) => `${n}× ${status}`).join(', ') || '0'
    const took = s.refusalS.length > 0 ? `${median(s.refusalS).toFixed(2)} / ${Math.max(...s.refusalS).toFixed(2)}` : '–'
    const note = s.died !== undefined ? ` **died: ${s.died}**` : s.odd.length > 0 ? ` (other: ${s.odd.length})` : ''
    lines.push(`| ${kindLabels[s.kind]} | ${s.clients} | ${s.served} | ${refused}${note} | ${took} | ${s.mibPerS.toFixed(0)} | ${mib(s.before.rssKiB * 1024)} | ${mib(s.peak.rssKiB * 1024)} | ${mib(s.peak.anonKiB * 1024)} | ${mib(s.reservedMid)} |`)
  }
  lines.push('', `${values.pause} s after the last step: RSS **${mib(r.after.rssKiB * 1024)} MiB** (anon ${mib(r.after.anonKiB * 1024)} MiB), ` +
  `${mib(r.pooledAfter)} MiB of buffers kept in the pool; node 1's VmHWM (lifetime peak) ${mib(r.hwmKiB * 1024)} MiB; cgroup oom_kill: ${r.oomKills}.`)
  return lines
}

/** Peak RSS of both configurations side by side, one row per requester kind and N. */
function comparisonTable (results: readonly ConfigResult[]): string[] {
  const head = results.map((r) => `${r.config.label}: peak RSS (anon), served / refused`)
  const lines = [
    `| requesters | N | ${head.join(' | ')} |`,
    `|---|---|${results.map(() => '---|').join('')}`,
  ]
  for (const kind of allKinds) {
    for (const clients of clientCounts) {
      const cells = results.map((r) => {
        const s = r.steps.find((x) => x.kind === kind && x.clients === clients)
        if (s === undefined) return '–'
        const refused = Object.values(s.refused).reduce((a, b) => a + b, 0)
        return `${mib(s.peak.rssKiB * 1024)} (${mib(s.peak.anonKiB * 1024)}), ${s.served} / ${refused}${s.died !== undefined ? ' died' : ''}`
      })
      if (cells.every((c) => c === '–')) continue
      lines.push(`| ${kindLabels[kind]} | ${clients} | ${cells.join(' | ')} |`)
    }
  }
  return lines
}

const started = performance.now()
const results: ConfigResult[] = []
for (const config of chosen) results.push(await runConfig(config))
const out = [
  `## Peak RSS of node 1 against concurrent transfers (${mib(results[0]?.layerSize ?? 0)} MiB layers; curl --limit-rate ${values.rate}, ${seconds} s per step, ${values.pause} s between steps)`,
  '',
  ...comparisonTable(results),
  '',
  ...results.flatMap((r) => [...detailTable(r), '']),
  `Whole run: ${((performance.now() - started) / 1000).toFixed(0)} s.`,
]
console.log(out.join('\n'))
