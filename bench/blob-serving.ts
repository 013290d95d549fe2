// Blob-serving benchmark: `spegel registry` serving a large blob from a real containerd content store, against
// docker-registry (the CNCF distribution registry) serving the same blob from its filesystem storage, both over
// loopback, in the same run, alternating which goes first. curl downloads to /dev/null (an independent client).
// Then the daemon's peak RSS while it serves four such downloads at once.
//
// With `--baseline REF` a second spegel daemon runs revision REF's bundle (bench/baseline.ts) beside the working
// tree's, with the same Node flags and environment, on the same containerd; each round downloads from all three
// servers, in an order that goes through every permutation and swaps current and baseline from one round to the next.
//
//   node bench/blob-serving.ts [--size-mib 1024] [--rounds 5] [--baseline e9b6e12]
//
// Prints a markdown table; docs/benchmarks.md records a run.
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { startContainerd } from '../test/helpers/containerd.ts'
import { pushLargeBlobImage } from '../test/helpers/images.ts'
import { run } from '../test/helpers/process.ts'
import { startRegistry } from '../test/helpers/registry.ts'
import { startSpegelRegistry, type SpegelRegistry } from '../test/helpers/spegel.ts'
import { requireKnownTool, requireTool } from '../test/helpers/tools.ts'
import { buildBaselineBundle, buildCurrentBundle, shippedEnv, shippedNodeOptions, type DaemonBundle } from './baseline.ts'
import { median } from './stats.ts'

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '5' },
    'node-options': { type: 'string', default: '' },
    'daemon-args': { type: 'string', default: '' },
    baseline: { type: 'string' },
  },
})
const sizeBytes = Number(values['size-mib']) * 1024 * 1024
const rounds = Number(values.rounds)

for (const tool of ['containerd', 'ctr', 'skopeo', 'docker-registry'] as const) requireKnownTool(tool)
requireTool('curl', 'apt-get install -y curl')

/** Downloads a URL to /dev/null with curl and returns bytes per second. */
async function download (url: string): Promise<number> {
  const res = await run('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', url], { timeoutMs: 300_000 })
  const [size, seconds] = res.stdout.trim().split(' ').map(Number)
  if (size !== sizeBytes && size === undefined) throw new Error('bad curl output')
  if (size !== (sizeBytesOf.get(url) ?? size)) throw new Error(`short download from ${url}: ${size}`)
  return (size ?? 0) / (seconds ?? 1)
}
const sizeBytesOf = new Map<string, number>()

/** Anonymous (heap, buffers) and file-backed (the node binary's code) parts of the RSS, in KiB. */
async function rssParts (pid: number): Promise<{ anon: number, file: number }> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? 0)
  return { anon: kib('Anonymous'), file: kib('Rss') - kib('Anonymous') }
}

async function rssKiB (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
}

const mib = (bps: number): string => (bps / 2 ** 20).toFixed(0)

interface PeakLoad {
  aggregate: number
  idleKiB: number
  peakKiB: number
  peakParts: { anon: number, file: number }
}

/** Peak RSS of `pid` while it serves four downloads of `url` at once, and their aggregate rate. */
async function peakUnderLoad (pid: number, url: string, size: number): Promise<PeakLoad> {
  let peak = await rssKiB(pid)
  const idle = peak
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await rssKiB(pid))
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })()
  let peakParts = await rssParts(pid)
  const partsSampler = setInterval(() => {
    void rssParts(pid).then((p) => { if (p.anon + p.file > peakParts.anon + peakParts.file) peakParts = p }, () => {})
  }, 50)
  const started = performance.now()
  await Promise.all(Array.from({ length: 4 }, async () => await download(url)))
  const seconds = (performance.now() - started) / 1000
  sampling = false
  clearInterval(partsSampler)
  await sampler
  return { aggregate: 4 * size / seconds, idleKiB: idle, peakKiB: peak, peakParts }
}

/** Each round's download order over three servers: all six permutations, the last two swapped from round to round. */
const orders3 = [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1], [1, 0, 2], [2, 0, 1]] as const

// Measure what ships: the bundled JavaScript with the image's Node flags (see Dockerfile).
const bundles: DaemonBundle[] = [await buildCurrentBundle()]
try {
  if (values.baseline !== undefined) {
    process.stderr.write(`building the baseline ${values.baseline}…\n`)
    bundles.push(await buildBaselineBundle(values.baseline))
  }
} catch (err) {
  for (const b of bundles) await b.cleanup()
  throw err
}
const comparing = bundles.length > 1
const spegelName = (b: DaemonBundle): string => comparing ? `spegel-ts ${b.label}` : 'spegel-ts'

const upstream = await startRegistry()
const node = await startContainerd()
const daemons: Array<{ name: string, registry: SpegelRegistry }> = []
try {
  process.stderr.write(`pushing a ${values['size-mib']} MiB blob…\n`)
  const image = await pushLargeBlobImage(upstream.host, sizeBytes)
  const layer = image.manifests[0]?.layers[0]
  if (layer === undefined) throw new Error('no layer')
  await node.ctr(['content', 'fetch', '--plain-http', image.ref])
  for (const bundle of bundles) {
    const registry = await startSpegelRegistry({
      cli: bundle.cli,
      env: { NODE_OPTIONS: values['node-options'] !== '' ? values['node-options'] : shippedNodeOptions, ...shippedEnv },
      containerdSocket: node.socket,
      contentPath: node.contentPath,
      args: ['--bootstrap-kind=static', ...values['daemon-args'].split(' ').filter((a) => a !== '')],
    })
    daemons.push({ name: spegelName(bundle), registry })
  }
  const urls = new Map<string, string>([['docker-registry', `${upstream.url}/v2/${image.repository}/blobs/${layer.digest}`]])
  for (const d of daemons) urls.set(d.name, `${d.registry.url}/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(upstream.host)}`)
  const names = [...urls.keys()]
  for (const url of urls.values()) sizeBytesOf.set(url, layer.size)
  // Warm the page cache for every copy so the comparison is about serving, not the disk.
  for (const url of urls.values()) await download(url)

  const results = new Map<string, number[]>(names.map((n) => [n, []]))
  const rounds3: Array<Map<string, number>> = []
  for (let r = 0; r < rounds; r++) {
    const order = names.length === 3
      ? orders3[r % orders3.length]!.map((i) => names[i]!)
      : r % 2 === 0 ? names : [...names].reverse()
    const round = new Map<string, number>()
    for (const name of order) round.set(name, await download(urls.get(name)!))
    for (const name of names) results.get(name)!.push(round.get(name)!)
    rounds3.push(round)
    process.stderr.write(`round ${r + 1}: ${names.map((n) => `${n} ${mib(round.get(n)!)} MiB/s`).join(', ')}\n`)
  }
  const ratioLine = (a: string, b: string): string => {
    const ratios = rounds3.map((round) => round.get(a)! / round.get(b)!)
    return `Median per-round ratio ${a} / ${b}: **${median(ratios).toFixed(2)}×** (rounds: ${ratios.map((r) => r.toFixed(2)).join(', ')})`
  }

  const loads = new Map<string, PeakLoad>()
  for (const d of daemons) loads.set(d.name, await peakUnderLoad(d.registry.process.pid, urls.get(d.name)!, layer.size))

  console.log(`Blob: ${(layer.size / 2 ** 20).toFixed(0)} MiB, ${rounds} rounds, loopback, curl to /dev/null, node ${process.version}`)
  console.log('')
  console.log('| server | median MiB/s | rounds (MiB/s) |')
  console.log('|---|---|---|')
  for (const [name, xs] of results) console.log(`| ${name} | ${mib(median(xs))} | ${xs.map(mib).join(', ')} |`)
  console.log('')
  for (const d of daemons) console.log(ratioLine(d.name, 'docker-registry'))
  if (comparing) console.log(ratioLine(daemons[0]!.name, daemons[1]!.name))
  for (const d of daemons) {
    const l = loads.get(d.name)!
    console.log(`Four concurrent downloads from ${d.name}: ${mib(l.aggregate)} MiB/s aggregate; daemon RSS idle ${(l.idleKiB / 1024).toFixed(0)} MiB, peak ${(l.peakKiB / 1024).toFixed(0)} MiB (at peak: ${(l.peakParts.anon / 1024).toFixed(0)} MiB anonymous, ${(l.peakParts.file / 1024).toFixed(0)} MiB file-backed code)`)
  }
} finally {
  for (const d of daemons) await d.registry.stop()
  await node.stop()
  await upstream.stop()
  for (const b of bundles) await b.cleanup()
}
