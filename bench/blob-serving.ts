// Blob-serving benchmark: `spegel registry` serving a large blob from a real containerd content store, against
// docker-registry (the CNCF distribution registry) serving the same blob from its filesystem storage, both over
// loopback, in the same run, alternating which goes first. curl downloads to /dev/null (an independent client).
// Then the daemon's peak RSS while it serves four such downloads at once.
//
//   node bench/blob-serving.ts [--size-mib 1024] [--rounds 5]
//
// Prints a markdown table; docs/benchmarks.md records a run.
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { startContainerd } from '../test/helpers/containerd.ts'
import { pushLargeBlobImage } from '../test/helpers/images.ts'
import { run } from '../test/helpers/process.ts'
import { startRegistry } from '../test/helpers/registry.ts'
import { startSpegelRegistry } from '../test/helpers/spegel.ts'
import { requireKnownTool, requireTool } from '../test/helpers/tools.ts'

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, rounds: { type: 'string', default: '5' }, 'node-options': { type: 'string', default: '' }, 'daemon-args': { type: 'string', default: '' } } })
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

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2
}

// Measure what ships: the bundled JavaScript with the image's Node flags (see Dockerfile).
await run('npm', ['run', 'bundle'], { timeoutMs: 300_000 })
const cli = new URL('../dist/spegel.mjs', import.meta.url).pathname
const imageNodeOptions = '--max-semi-space-size=1'
const imageEnv = { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2', MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ ?? '131072' }

const upstream = await startRegistry()
const node = await startContainerd()
let spegel: Awaited<ReturnType<typeof startSpegelRegistry>> | undefined
try {
  process.stderr.write(`pushing a ${values['size-mib']} MiB blob…\n`)
  const image = await pushLargeBlobImage(upstream.host, sizeBytes)
  const layer = image.manifests[0]?.layers[0]
  if (layer === undefined) throw new Error('no layer')
  await node.ctr(['content', 'fetch', '--plain-http', image.ref])
  spegel = await startSpegelRegistry({ cli, env: { NODE_OPTIONS: values['node-options'] !== '' ? values['node-options'] : imageNodeOptions, ...imageEnv }, containerdSocket: node.socket, contentPath: node.contentPath, args: ['--bootstrap-kind=static', ...values['daemon-args'].split(' ').filter((a) => a !== '')] })
  const urls = {
    'docker-registry': `${upstream.url}/v2/${image.repository}/blobs/${layer.digest}`,
    'spegel-ts': `${spegel.url}/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(upstream.host)}`,
  }
  for (const url of Object.values(urls)) sizeBytesOf.set(url, layer.size)
  // Warm the page cache for both copies so the comparison is about serving, not the disk.
  for (const url of Object.values(urls)) await download(url)

  const results: Record<string, number[]> = { 'docker-registry': [], 'spegel-ts': [] }
  const ratios: number[] = []
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? ['docker-registry', 'spegel-ts'] : ['spegel-ts', 'docker-registry']
    const round: Record<string, number> = {}
    for (const name of order) round[name] = await download(urls[name as keyof typeof urls])
    for (const name of order) results[name]?.push(round[name] as number)
    ratios.push((round['spegel-ts'] as number) / (round['docker-registry'] as number))
    process.stderr.write(`round ${r + 1}: docker-registry ${((round['docker-registry'] as number) / 2 ** 20).toFixed(0)} MiB/s, spegel-ts ${((round['spegel-ts'] as number) / 2 ** 20).toFixed(0)} MiB/s\n`)
  }

  // Peak RSS while serving four downloads of the blob at once.
  const pid = spegel.process.pid
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
  await Promise.all(Array.from({ length: 4 }, async () => await download(urls['spegel-ts'])))
  const concurrentSeconds = (performance.now() - started) / 1000
  sampling = false
  clearInterval(partsSampler)
  await sampler

  const mib = (bps: number): string => (bps / 2 ** 20).toFixed(0)
  console.log(`Blob: ${(layer.size / 2 ** 20).toFixed(0)} MiB, ${rounds} rounds, loopback, curl to /dev/null, node ${process.version}`)
  console.log('')
  console.log('| server | median MiB/s | rounds (MiB/s) |')
  console.log('|---|---|---|')
  for (const [name, xs] of Object.entries(results)) console.log(`| ${name} | ${mib(median(xs))} | ${xs.map(mib).join(', ')} |`)
  console.log('')
  console.log(`Median per-round ratio spegel-ts / docker-registry: **${median(ratios).toFixed(2)}×** (rounds: ${ratios.map((r) => r.toFixed(2)).join(', ')})`)
  console.log(`Four concurrent downloads from spegel-ts: ${(4 * layer.size / 2 ** 20 / concurrentSeconds).toFixed(0)} MiB/s aggregate; daemon RSS idle ${(idle / 1024).toFixed(0)} MiB, peak ${(peak / 1024).toFixed(0)} MiB (at peak: ${(peakParts.anon / 1024).toFixed(0)} MiB anonymous, ${(peakParts.file / 1024).toFixed(0)} MiB file-backed code)`)
} finally {
  await spegel?.stop()
  await node.stop()
  await upstream.stop()
}
