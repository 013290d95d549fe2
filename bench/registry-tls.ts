// What mutual TLS on the registry port (--registry-cert-dir, issue 18) costs on the data path. Two namespace nodes
// with real containerd and the daemon from this tree, once plain and once with TLS (alternating order, a fresh
// cluster each time): node 1 pulls an image with one large layer; then curl (in the host namespace) downloads that
// layer from node 1 (served from its content store) and from node 2 (proxied from node 1, so over a peer connection
// too). Reported per side: throughput and the daemons' CPU time per GiB (node 1 alone for the local download, both
// nodes for the proxied one).
//
//   node bench/registry-tls.ts [--rounds 3] [--blob-mib 1024]
//
// Needs root, the Debian packages containerd, docker-registry, skopeo, iproute2, curl and openssl. Prints markdown.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { pushLargeBlobImage, type PushedImage } from '../test/helpers/images.ts'
import { requireNetnsSupport } from '../test/helpers/netns.ts'
import { run } from '../test/helpers/process.ts'
import { startSpegelCluster, type SpegelNode } from '../test/helpers/spegel-cluster.ts'
import { makeTempDir } from '../test/helpers/tmp.ts'
import { makeCertDir, type TestCertDir } from '../test/helpers/tls.ts'
import { requireTool } from '../test/helpers/tools.ts'
import { median } from './stats.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, 'blob-mib': { type: 'string', default: '1024' } } })
const rounds = Number(values.rounds)
const blobMiB = Number(values['blob-mib'])
const MiB = 1024 * 1024
requireNetnsSupport()
requireTool('curl', 'apt-get install -y curl')

type Side = 'plain' | 'tls'
interface Sample { localMiBs: number, localCpuMsPerGiB: number, proxiedMiBs: number, proxiedCpuMsPerGiB: number }

async function cpuMs (node: SpegelNode): Promise<number> {
  const pid = node.daemon?.pid
  if (pid === undefined) throw new Error(`${node.name} has no daemon`)
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) * 10
}

async function download (url: string, expected: number, tls: TestCertDir | undefined): Promise<number> {
  const auth = tls !== undefined ? ['--cacert', join(tls.dir, 'ca.crt'), '--cert', join(tls.dir, 'tls.crt'), '--key', join(tls.dir, 'tls.key')] : []
  const res = await run('curl', ['-sS', '--fail', ...auth, '-o', '/dev/null', '-w', '%{size_download} %{time_total}', url], { timeoutMs: 600_000 })
  const [size, seconds] = res.stdout.trim().split(' ').map(Number)
  if (size !== expected) throw new Error(`short download from ${url}: ${size} of ${expected} bytes`)
  return expected / MiB / (seconds ?? 1)
}

async function measure (side: Side): Promise<Sample> {
  const tmp = await makeTempDir('spegel-bench-tls')
  let certs: TestCertDir | undefined
  const cluster = await startSpegelCluster({
    nodes: 2,
    prefix: 'spgtlsb',
    ...(side === 'tls' ? { registryTls: async (ips: readonly string[]) => { certs = await makeCertDir(tmp.path, { name: 'spegel', ips }); return certs } } : {}),
  })
  try {
    const [n1, n2] = cluster.nodes as [SpegelNode, SpegelNode]
    const image: PushedImage = await pushLargeBlobImage(cluster.upstreamHost, blobMiB * MiB)
    await n1.pull(image.ref, { timeoutMs: 600_000 })
    const layer = image.children.find((c) => c.size >= blobMiB * MiB)
    if (layer === undefined) throw new Error('no large layer')
    await cluster.waitServable(n2, image.repository, 'blobs', layer.digest)
    const path = `/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstreamHost)}`
    const gib = layer.size / (1024 * MiB)
    let before = await cpuMs(n1)
    const localMiBs = await download(`${n1.mirrorUrl}${path}`, layer.size, certs)
    const localCpu = await cpuMs(n1) - before
    before = await cpuMs(n1) + await cpuMs(n2)
    const proxiedMiBs = await download(`${n2.mirrorUrl}${path}`, layer.size, certs)
    const proxiedCpu = await cpuMs(n1) + await cpuMs(n2) - before
    return { localMiBs, localCpuMsPerGiB: localCpu / gib, proxiedMiBs, proxiedCpuMsPerGiB: proxiedCpu / gib }
  } finally {
    await cluster.stop()
    await tmp.cleanup()
  }
}

const samples: Record<Side, Sample[]> = { plain: [], tls: [] }
for (let r = 0; r < rounds; r++) {
  for (const side of (r % 2 === 0 ? ['plain', 'tls'] : ['tls', 'plain']) as Side[]) {
    const s = await measure(side)
    samples[side].push(s)
    process.stderr.write(`round ${r + 1} ${side}: local ${s.localMiBs.toFixed(0)} MiB/s, ${s.localCpuMsPerGiB.toFixed(0)} ms CPU/GiB; proxied ${s.proxiedMiBs.toFixed(0)} MiB/s, ${s.proxiedCpuMsPerGiB.toFixed(0)} ms CPU/GiB\n`)
  }
}
const med = (side: Side, key: keyof Sample): number => median(samples[side].map((s) => s[key]))
const row = (label: string, key: keyof Sample, digits = 0): string =>
  `| ${label} | ${med('plain', key).toFixed(digits)} | ${med('tls', key).toFixed(digits)} | ${(med('tls', key) / med('plain', key)).toFixed(2)}× |`
console.log([
  `${rounds} rounds, ${blobMiB} MiB layer, 2 nodes, medians`,
  '',
  '| measurement | plain HTTP | mutual TLS | TLS ÷ plain |',
  '|---|---|---|---|',
  row('served by node 1 from its content store, MiB/s', 'localMiBs'),
  row('… CPU ms of node 1 per GiB', 'localCpuMsPerGiB'),
  row('proxied by node 2 from node 1 (two TLS hops), MiB/s', 'proxiedMiBs'),
  row('… CPU ms of both daemons per GiB', 'proxiedCpuMsPerGiB'),
].join('\n'))
