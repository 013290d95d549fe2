// `npm run demo`: a Spegel cluster of three nodes on this machine, each a network namespace with its own containerd
// and its own `spegel registry`, plus one upstream registry in its own namespace (its link shaped to 100 Mbit/s, as
// a remote registry would be). An image is pulled on node 1, then on nodes 2 and 3, then a second image sharing two
// layers with the first on node 3; for every blob of every pull it prints where the blob came from (local, peer or
// upstream) and how long it took.
//
//   npm run demo [-- --upstream-rate=100mbit|none]
//
// Needs root and the Debian packages containerd, docker-registry, skopeo and iproute2. Everything it creates
// (namespaces, processes, temporary directories) is removed at the end, also on Ctrl-C.
import { join } from 'node:path'
import { buildImageFromLayout, describeMissing, formatBytes, formatMs } from './support.ts'
import { pushLayout, OciLayoutWriter, type ImageDescriptor, type PushedImage } from '../test/helpers/images.ts'
import { parseRegistryLogLine } from '../test/helpers/registry.ts'
import { startSpegelCluster, type SpegelCluster, type SpegelNode } from '../test/helpers/spegel-cluster.ts'
import { makeTempDir } from '../test/helpers/tmp.ts'

const MiB = 1024 * 1024

interface BlobOrigin {
  digest: string
  kind: string
  size: number
  source: 'local' | 'peer' | 'upstream' | 'unknown'
  /** Peer node name for `peer`. */
  from?: string
  ms?: number
}

function parseArgs (argv: string[]): { rate: string | undefined } {
  let rate: string | undefined = '100mbit'
  for (const arg of argv) {
    const m = /^--upstream-rate=(.+)$/.exec(arg)
    if (m !== null) rate = m[1] === 'none' ? undefined : m[1]
    else if (arg === '--help' || arg === '-h') {
      console.log('usage: npm run demo [-- --upstream-rate=100mbit|none]')
      process.exit(0)
    } else {
      console.error(`unknown argument ${arg}`)
      process.exit(2)
    }
  }
  return { rate }
}

/** Go durations as the registry logs them ("1.5ms", "2.3s", "850µs"). */
function goDurationMs (text: unknown): number | undefined {
  if (typeof text !== 'string') return undefined
  let total = 0
  let matched = false
  for (const m of text.matchAll(/([\d.]+)(ns|µs|us|ms|s|m|h)/g)) {
    matched = true
    const n = Number(m[1])
    const unit = m[2]
    total += unit === 'ns' ? n / 1e6 : unit === 'µs' || unit === 'us' ? n / 1e3 : unit === 'ms' ? n : unit === 's' ? n * 1e3 : unit === 'm' ? n * 60e3 : n * 3600e3
  }
  return matched ? total : undefined
}

/** Upstream time per digest for requests from `ip`, from the registry's own log lines. */
function upstreamTimes (cluster: SpegelCluster, ip: string): Map<string, number> {
  const times = new Map<string, number>()
  for (const line of cluster.upstream.process.output().split('\n')) {
    const entry = parseRegistryLogLine(line)
    if (entry === undefined || entry.method !== 'GET' || entry.digest === undefined || entry.status !== 200) continue
    if (!entry.remoteAddr.startsWith(`${ip}:`)) continue
    const record = JSON.parse(line) as Record<string, unknown>
    const ms = goDurationMs(record['http.response.duration'])
    if (ms !== undefined) times.set(entry.digest, ms)
  }
  return times
}

async function pullAndExplain (cluster: SpegelCluster, node: SpegelNode, image: PushedImage, signal: AbortSignal): Promise<void> {
  const blobs: Array<{ digest: string, kind: string, size: number }> = [
    { digest: image.digest, kind: 'manifest', size: image.size },
    ...image.children.map((d: ImageDescriptor) => ({ digest: d.digest, kind: d.mediaType.includes('config') ? 'config' : 'layer', size: d.size })),
  ]
  const held = await node.contentDigests()
  const logsBefore = node.logs().length
  cluster.upstream.resetAccessLog()
  const started = performance.now()
  await node.pull(image.ref, { signal })
  const total = performance.now() - started
  await cluster.upstream.waitForQuiet()

  const fromUpstream = new Set(cluster.upstream.accessLog()
    .filter((e) => e.method === 'GET' && e.status === 200 && e.digest !== undefined && e.remoteAddr.startsWith(`${node.ip}:`))
    .map((e) => e.digest))
  const upTimes = upstreamTimes(cluster, node.ip)
  const byPeerId = new Map(cluster.nodes.map((n) => [n.peerId, n.name]))
  const fromPeers = new Map<string, { peer: string, ms: number }>()
  // "served from peer" is logged when the response to containerd closes: give the last ones a moment.
  await new Promise((resolve) => setTimeout(resolve, 200))
  for (const r of node.logs().slice(logsBefore)) {
    if (r.msg !== 'served from peer' || r.complete !== true || typeof r.key !== 'string') continue
    fromPeers.set(r.key, { peer: byPeerId.get(String(r.peer)) ?? String(r.peer), ms: Number(r.ms) })
  }

  const origins: BlobOrigin[] = blobs.map((b) => {
    if (held.has(b.digest)) return { ...b, source: 'local' }
    const peer = fromPeers.get(b.digest)
    if (peer !== undefined) return { ...b, source: 'peer', from: peer.peer, ms: peer.ms }
    if (fromUpstream.has(b.digest)) {
      const ms = upTimes.get(b.digest)
      return { ...b, source: 'upstream', ...(ms !== undefined ? { ms } : {}) }
    }
    return { ...b, source: 'unknown' }
  })

  console.log(`\n${node.name} (${node.ip}) pulls ${image.ref}: ${formatMs(total)} in all`)
  console.log(`  ${'blob'.padEnd(21)} ${'kind'.padEnd(8)} ${'size'.padStart(9)}  ${'came from'.padEnd(15)} ${'time'.padStart(8)}`)
  for (const o of origins) {
    const source = o.source === 'peer' ? `peer ${o.from ?? '?'}` : o.source === 'local' ? 'local (held)' : o.source
    console.log(`  ${o.digest.slice(0, 21)} ${o.kind.padEnd(8)} ${formatBytes(o.size).padStart(9)}  ${source.padEnd(15)} ${(o.ms !== undefined ? formatMs(o.ms) : '-').padStart(8)}`)
  }
  const upstreamBytes = origins.filter((o) => o.source === 'upstream').reduce((n, o) => n + o.size, 0)
  console.log(`  upstream blob bytes for this pull: ${formatBytes(upstreamBytes)}`)
}

async function main (): Promise<number> {
  const { rate } = parseArgs(process.argv.slice(2))
  const missing = describeMissing()
  if (missing !== undefined) {
    console.error(missing)
    return 1
  }

  const ac = new AbortController()
  let cluster: SpegelCluster | undefined
  let interrupted = false
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return
    interrupted = true
    console.error(`\n${sig}: cleaning up…`)
    ac.abort(new Error(`interrupted by ${sig}`))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const work = await makeTempDir('spegel-demo')
  try {
    console.log('starting 3 nodes (network namespace + containerd + spegel registry each) and an upstream registry…')
    cluster = await startSpegelCluster({ nodes: 3, prefix: 'spgdemo', logLevel: 'DEBUG' })
    ac.signal.throwIfAborted()
    for (const n of cluster.nodes) console.log(`  ${n.name}: ${n.ip}, mirror ${n.mirrorUrl}, peer ${n.peerId ?? '?'}`)
    console.log(`  upstream: http://${cluster.upstreamHost}${rate !== undefined ? ` (link shaped to ${rate})` : ''}`)

    // Two images in one layout: v2 shares v1's first two layers and adds its own.
    const layout = new OciLayoutWriter(join(work.path, 'layout'))
    await layout.init()
    const v1 = await buildImageFromLayout(layout, 'v1', [6 * MiB, 12 * MiB, 18 * MiB])
    const v2 = await buildImageFromLayout(layout, 'v2', [4 * MiB], v1.manifests[0])
    await layout.finish()
    const pushed1 = await pushLayout(v1, cluster.upstreamHost, 'demo/app', 'v1', { signal: ac.signal })
    const pushed2 = await pushLayout(v2, cluster.upstreamHost, 'demo/app', 'v2', { signal: ac.signal })
    console.log(`pushed ${pushed1.ref} and ${pushed2.ref} to the upstream`)
    if (rate !== undefined && cluster.net.upstream !== undefined) await cluster.net.shape(cluster.net.upstream, { rate })

    const [n1, n2, n3] = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
    await pullAndExplain(cluster, n1, pushed1, ac.signal)
    for (const node of [n2, n3]) {
      await cluster.waitServable(node, pushed1.repository, 'manifests', pushed1.tag)
      await pullAndExplain(cluster, node, pushed1, ac.signal)
    }
    await pullAndExplain(cluster, n3, pushed2, ac.signal)
    console.log('\nnode 1 fetched from the upstream; nodes 2 and 3 from their peers; layers a node already held stayed local.')
    return 0
  } catch (err) {
    if (interrupted) return 130
    console.error(`demo failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    return 1
  } finally {
    console.log('cleaning up: stopping daemons, containerd and the upstream, deleting the namespaces…')
    await cluster?.stop().catch((err: unknown) => { console.error('cleanup:', err) })
    await work.cleanup()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

process.exitCode = await main()
