// Issue 11 (rollouts): "when every node pulls the same new image at once, upstream serves it about once".
//
// Four network-namespace nodes (test/helpers/spegel-cluster.ts: real containerd and `spegel registry` per node, one
// real docker-registry upstream whose link is shaped to 100 Mbit/s so a pull takes seconds) pull the same never-seen
// ~60 MB three-layer image at the same instant: once with `ctr images pull` through each node's hosts.toml, once (a
// fresh image) with CRI PullImage as the kubelet does. Every node must end with every digest, and the bytes on disk
// must hash to them; the upstream's GET blob bodies (its access log, read once the link is quiet) must add up to
// less than 1.5× the image's blobs.
//
// Then the node downloading from the upstream is found while it downloads (the upstream's own view: `ss` in its
// namespace, bytes acknowledged per client address; every node has its own address) and, mid-blob, its daemon is
// killed, and in a second round its containerd. The other nodes must still end with the right image (falling back to
// the upstream is allowed), and no pull may hang: each is bounded by pullBoundMs. The victim's node is then repaired
// and must pull the image too.
//
// HERD_FLAG=false runs the same test with `--herd-protection=false`; it then asserts the herd is really there (each
// node downloads the image itself, ≥ 3×). Until the daemon has the flag (checked in `spegel registry --help`) no flag
// is passed, and the default run fails the < 1.5× assertion, printing the figure: today's behaviour.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { pipeline } from 'node:stream/promises'
import { after, before, describe, it, type TestContext } from 'node:test'
import { CriImages } from '../../helpers/cri-images.ts'
import { buildImage, pushLayout, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { isPidAlive, run } from '../../helpers/process.ts'
import { waitFor } from '../../helpers/wait.ts'
import { metricsPort, registryPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../../helpers/spegel-cluster.ts'
import { runSpegel } from '../../helpers/spegel.ts'
import { requireTool } from '../../helpers/tools.ts'

/** The setting under test: HERD_FLAG=false gives `--herd-protection=false` (today's behaviour); default on. */
const herdProtection = process.env.HERD_FLAG !== 'false'
const NODES = 4
const MiB = 1024 * 1024
/** Three layers of 20 MiB random content: about 60 MB of gzip blobs. */
const layerSizes = [20 * MiB, 20 * MiB, 20 * MiB]
const upstreamRate = '100mbit'
/** Upper bound of any single pull: a pull that takes longer has hung. */
const pullBoundMs = 120_000
/** Upstream blob bytes as a multiple of the image's blob bytes, with herd protection on. */
const maxUpstreamMultiple = 1.5
/** With it off each node downloads the image itself (4×); less than this means the pulls did not overlap. */
const minHerdMultipleWithoutProtection = 3
/** The downloading node is stopped once the upstream has sent it this share of the image's blob bytes. */
const killAtShare = 0.25

/** `--herd-protection=…`, or nothing while the daemon does not have the flag yet. */
async function herdArgs (): Promise<{ args: string[], supported: boolean }> {
  const help = await runSpegel(['registry', '--help'], { allowNonZero: true })
  const supported = (help.stdout + help.stderr).includes('--herd-protection')
  return { args: supported ? [`--herd-protection=${herdProtection}`] : [], supported }
}

/** Builds a fresh image (random layers, so no node and no peer has seen it) and pushes it to the upstream. */
async function pushFreshImage (cluster: SpegelCluster, repository: string): Promise<PushedImage> {
  const built = await buildImage({ layers: layerSizes.map((sizeBytes) => ({ sizeBytes })), tag: 'v1' })
  try {
    return await pushLayout(built, cluster.upstreamHost, repository, 'v1')
  } finally {
    await built.cleanup()
  }
}

/** Config and layers: what a pull fetches with GET /v2/…/blobs/. */
function blobsOf (image: PushedImage): Array<{ digest: string, size: number }> {
  return image.children
}

function blobBytesOf (image: PushedImage): number {
  return blobsOf(image).reduce((n, b) => n + b.size, 0)
}

interface PullOutcome {
  node: SpegelNode
  startedAt: number
  endedAt: number
  error?: Error
}

/** Starts `pull` on every node at the same instant; settles once all have ended (each bounded by pullBoundMs). */
async function pullEverywhere (nodes: readonly SpegelNode[], pull: (node: SpegelNode) => Promise<unknown>): Promise<PullOutcome[]> {
  return await Promise.all(nodes.map(async (node): Promise<PullOutcome> => {
    const startedAt = performance.now()
    try {
      await pull(node)
      return { node, startedAt, endedAt: performance.now() }
    } catch (err) {
      return { node, startedAt, endedAt: performance.now(), error: err instanceof Error ? err : new Error(String(err)) }
    }
  }))
}

function describePulls (outcomes: readonly PullOutcome[]): string {
  return outcomes.map((o) => `${o.node.name} ${((o.endedAt - o.startedAt) / 1000).toFixed(1)} s${o.error !== undefined ? ` FAILED: ${o.error.message.split('\n')[0]}` : ''}`).join(', ')
}

/** The pulls ran at the same time: every one started before any ended. */
function assertOverlapped (outcomes: readonly PullOutcome[]): void {
  const lastStart = Math.max(...outcomes.map((o) => o.startedAt))
  const firstEnd = Math.min(...outcomes.map((o) => o.endedAt))
  assert.ok(lastStart < firstEnd, `the pulls overlapped (last start ${(lastStart - firstEnd).toFixed(0)} ms after the first end)`)
}

/** Upstream GET blob bytes of `image`'s repository, in total and by node (client address), once the link is quiet. */
async function upstreamBlobBytes (cluster: SpegelCluster, image: PushedImage): Promise<{ total: number, multiple: number, byNode: string }> {
  await cluster.upstream.waitForQuiet({ quietMs: 1000 })
  const total = cluster.upstream.blobBytesServed({ repository: image.repository })
  const perClient = new Map<string, number>()
  for (const e of cluster.upstream.accessLog()) {
    if (e.method !== 'GET' || e.repository !== image.repository || !e.path.includes('/blobs/')) continue
    if (e.status !== 200 && e.status !== 206) continue
    const ip = e.remoteAddr.replace(/:\d+$/, '')
    const name = cluster.nodes.find((n) => n.ip === ip)?.name ?? ip
    perClient.set(name, (perClient.get(name) ?? 0) + e.bytes)
  }
  const byNode = [...perClient].sort().map(([name, bytes]) => `${name} ${(bytes / MiB).toFixed(1)} MiB`).join(', ') || 'none'
  return { total, multiple: total / blobBytesOf(image), byNode }
}

/** Every node holds the image, and each blob file on disk hashes to its digest. */
async function assertHoldsImage (node: SpegelNode, image: PushedImage): Promise<void> {
  assert.equal(await node.imageDigest(image.ref), image.digest, `${node.name} has ${image.ref}`)
  const held = await node.contentDigests()
  for (const blob of blobsOf(image)) {
    assert.ok(held.has(blob.digest), `${node.name} holds ${blob.digest}`)
    const hex = blob.digest.replace(/^sha256:/, '')
    const hash = createHash('sha256')
    await pipeline(createReadStream(join(node.containerd.contentPath, 'blobs', 'sha256', hex)), hash)
    assert.equal(hash.digest('hex'), hex, `${node.name}: the bytes of ${blob.digest} on disk`)
  }
}

/**
 * Bytes the upstream has sent (and had acknowledged) on each open connection, by client `IP:PORT`: the upstream's own
 * live view of who is downloading from it (its access log only has a request once the response is complete).
 * containerd keeps idle connections from earlier CRI pulls open for a while, so callers subtract a baseline.
 */
async function upstreamConnections (cluster: SpegelCluster): Promise<Map<string, number>> {
  const ss = requireTool('ss', 'apt-get install -y iproute2')
  const upstream = cluster.net.upstream
  assert.ok(upstream !== undefined)
  const { stdout } = await run(ss, ['-tniH', 'state', 'established', `sport = :${registryPort}`], { netns: upstream.netns, timeoutMs: 10_000 })
  const totals = new Map<string, number>()
  let client: string | undefined
  for (const line of stdout.split('\n')) {
    const addresses = /\s\d+\.\d+\.\d+\.\d+:\d+\s+(\d+\.\d+\.\d+\.\d+:\d+)/.exec(line)
    if (addresses !== null) client = addresses[1]
    const acked = /bytes_acked:(\d+)/.exec(line)
    if (acked !== null && client !== undefined) totals.set(client, (totals.get(client) ?? 0) + Number(acked[1]))
  }
  return totals
}

/** Bytes sent per client IP since `baseline` (an earlier upstreamConnections). */
function bytesByClientSince (now: Map<string, number>, baseline: Map<string, number>): Map<string, number> {
  const totals = new Map<string, number>()
  for (const [connection, bytes] of now) {
    const ip = connection.replace(/:\d+$/, '')
    totals.set(ip, (totals.get(ip) ?? 0) + bytes - Math.min(bytes, baseline.get(connection) ?? 0))
  }
  return totals
}

/** What a node's containerd is downloading right now: its ingest directory (ref and bytes so far of each blob). */
async function ingestSnapshot (node: SpegelNode): Promise<{ node: SpegelNode, text: string, partial: number }> {
  const dir = join(node.containerd.contentPath, 'ingest')
  const entries = await readdir(dir).catch(() => [] as string[])
  const parts: string[] = []
  let partial = 0
  for (const entry of entries) {
    const ref = await readFile(join(dir, entry, 'ref'), 'utf8').catch(() => '?')
    const size = await stat(join(dir, entry, 'data')).then((s) => s.size, () => 0)
    const total = Number(await readFile(join(dir, entry, 'total'), 'utf8').catch(() => 'NaN'))
    if (size > 0 && !(size >= total)) partial++
    parts.push(`${ref.replace(/^.*sha256:([0-9a-f]{12}).*$/, '$1')} ${(size / MiB).toFixed(1)}/${(total / MiB).toFixed(1)} MiB`)
  }
  return { node, text: parts.length === 0 ? '-' : parts.join(', '), partial }
}

/** The daemon's herd protection outcomes so far (spegel_herd_outcomes_total by outcome); empty without them. */
async function herdOutcomes (node: SpegelNode): Promise<Map<string, number>> {
  const outcomes = new Map<string, number>()
  try {
    const res = await fetch(`http://${node.ip}:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) })
    for (const m of (await res.text()).matchAll(/^spegel_herd_outcomes_total\{outcome="(\w+)"\} (\d+)/gm)) outcomes.set(m[1]!, Number(m[2]))
  } catch {
    // A daemon that is down has no outcomes to show.
  }
  return outcomes
}

/** Per node, the herd outcomes counted since `before` (a restarted daemon counts from zero), for diagnostics. */
async function describeHerdOutcomes (nodes: readonly SpegelNode[], before: ReadonlyMap<SpegelNode, Map<string, number>>): Promise<string> {
  const parts: string[] = []
  for (const node of nodes) {
    const now = await herdOutcomes(node)
    const earlier = before.get(node) ?? new Map<string, number>()
    const counts = [...now].map(([outcome, n]) => [outcome, n - (n >= (earlier.get(outcome) ?? 0) ? (earlier.get(outcome) ?? 0) : 0)] as const).filter(([, n]) => n > 0)
    parts.push(`${node.name} ${counts.length === 0 ? '-' : counts.map(([o, n]) => `${o} ${n}`).join(' ')}`)
  }
  return parts.join(', ')
}

async function herdOutcomesOf (nodes: readonly SpegelNode[]): Promise<Map<SpegelNode, Map<string, number>>> {
  return new Map(await Promise.all(nodes.map(async (n) => [n, await herdOutcomes(n)] as const)))
}

describe(`a rollout: ${NODES} nodes pull the same never-seen image at once (herd protection ${herdProtection ? 'on' : 'off'})`, { timeout: 420_000 }, () => {
  let cluster: SpegelCluster
  let flagSupported = false
  let nodes: readonly SpegelNode[]
  const images = new Map<string, PushedImage>()
  const cri = new Map<SpegelNode, CriImages>()

  before(async () => {
    requireNetnsSupport()
    const herd = await herdArgs()
    flagSupported = herd.supported
    cluster = await startSpegelCluster({ nodes: NODES, prefix: 'spgherd', logLevel: 'DEBUG', daemonArgs: herd.args })
    nodes = cluster.nodes
    for (const node of nodes) cri.set(node, new CriImages(node.containerd.socket))
    // Every image is pushed before the link is shaped: shaping limits what the upstream sends.
    for (const name of ['ctr', 'cri', 'kill-daemon', 'kill-containerd']) images.set(name, await pushFreshImage(cluster, `rollout/${name}`))
    const upstream = cluster.net.upstream
    assert.ok(upstream !== undefined)
    await cluster.net.shape(upstream, { rate: upstreamRate })
    cluster.upstream.resetAccessLog()
  })
  after(async () => {
    for (const c of cri.values()) c.close()
    await cluster?.stop()
  })

  /** The upstream multiple against the target of the setting under test. */
  function assertUpstreamMultiple (t: TestContext, what: string, multiple: number): void {
    const flagNote = flagSupported ? '' : ' (the daemon has no --herd-protection flag yet: no herd protection)'
    t.diagnostic(`${what}: the upstream served ${multiple.toFixed(2)}× the image${flagNote}`)
    if (herdProtection) {
      assert.ok(multiple < maxUpstreamMultiple, `${what}: the upstream served ${multiple.toFixed(2)}× the image's blob bytes, want < ${maxUpstreamMultiple}×${flagNote}`)
    } else {
      assert.ok(multiple >= minHerdMultipleWithoutProtection, `${what}: without herd protection the upstream served only ${multiple.toFixed(2)}× the image: the pulls did not make a herd`)
    }
  }

  /** Every node pulls `image` at once with `pull`: each must end up with it, the upstream serving it about once. */
  async function herdPull (t: TestContext, what: string, image: PushedImage, pull: (node: SpegelNode) => Promise<unknown>): Promise<void> {
    const herdBefore = await herdOutcomesOf(nodes)
    const outcomes = await pullEverywhere(nodes, pull)
    t.diagnostic(`pulls: ${describePulls(outcomes)}`)
    for (const o of outcomes) assert.equal(o.error, undefined, `${o.node.name}'s pull: ${o.error?.message}`)
    assertOverlapped(outcomes)
    for (const node of nodes) await assertHoldsImage(node, image)
    const up = await upstreamBlobBytes(cluster, image)
    t.diagnostic(`upstream blob bytes by node: ${up.byNode}`)
    t.diagnostic(`herd outcomes (blobs): ${await describeHerdOutcomes(nodes, herdBefore)}`)
    assertUpstreamMultiple(t, what, up.multiple)
  }

  it('ctr images pull on every node at once: every node gets the image, the upstream serves it about once', async (t) => {
    const image = images.get('ctr')!
    await herdPull(t, 'ctr', image, async (n) => { await n.pull(image.ref, { timeoutMs: pullBoundMs }) })
  })

  it('CRI PullImage on every node at once (the kubelet\'s way): the same', async (t) => {
    const image = images.get('cri')!
    await herdPull(t, 'CRI', image, async (n) => await cri.get(n)!.pull(image.ref, pullBoundMs))
  })

  /**
   * Starts a ctr pull of `image` on every node, finds the node the upstream is sending the most to once it has sent
   * killAtShare of the image, and calls `kill` on it while its blobs are still in flight. Resolves with the victim and
   * every pull's outcome.
   */
  async function killDownloaderMidBlob (t: TestContext, image: PushedImage, kill: (node: SpegelNode) => Promise<void>): Promise<{ victim: SpegelNode, outcomes: PullOutcome[] }> {
    const baseline = await upstreamConnections(cluster)
    const herdBefore = await herdOutcomesOf(nodes)
    let settled = false
    const pulls = pullEverywhere(nodes, async (n) => { await n.pull(image.ref, { timeoutMs: pullBoundMs }) }).finally(() => { settled = true })
    const threshold = blobBytesOf(image) * killAtShare
    let flows = new Map<string, number>()
    let victim: SpegelNode | undefined
    const deadline = performance.now() + 60_000
    try {
      while (victim === undefined) {
        if (settled) assert.fail(`every pull ended before any node had received ${(threshold / MiB).toFixed(0)} MiB from the upstream: ${describePulls(await pulls)}`)
        if (performance.now() > deadline) assert.fail(`no node received ${(threshold / MiB).toFixed(0)} MiB from the upstream within 60 s`)
        flows = bytesByClientSince(await upstreamConnections(cluster), baseline)
        const [ip, bytes] = [...flows].sort((a, b) => b[1] - a[1])[0] ?? ['', 0]
        if (bytes >= threshold) victim = nodes.find((n) => n.ip === ip)
        else await sleep(100)
      }
    } finally {
      // Never leave pulls running behind a failed search.
      if (victim === undefined) await pulls
    }
    t.diagnostic(`upstream → nodes (bytes acked on open connections): ${nodes.map((n) => `${n.name} ${((flows.get(n.ip) ?? 0) / MiB).toFixed(1)} MiB`).join(', ')}`)
    const ingest = await Promise.all(nodes.map(ingestSnapshot))
    t.diagnostic(`ingest at the kill: ${ingest.map((i) => `${i.node.name}: ${i.text}`).join('; ')}`)
    // Mid-blob: the victim's containerd has a blob part-way down.
    const victimIngest = ingest.find((i) => i.node === victim)
    assert.ok(victimIngest !== undefined && victimIngest.partial > 0, `${victim.name} is mid-blob at the kill: ${victimIngest?.text}`)
    await kill(victim)
    const outcomes = await pulls
    t.diagnostic(`pulls: ${describePulls(outcomes)}`)
    t.diagnostic(`herd outcomes (blobs): ${await describeHerdOutcomes(nodes, herdBefore)}`)
    return { victim, outcomes }
  }

  /** The other nodes finished, in time, with the right image; then the victim's node pulls it too. */
  async function assertRecovered (t: TestContext, image: PushedImage, victim: SpegelNode, outcomes: readonly PullOutcome[]): Promise<void> {
    for (const o of outcomes) {
      if (o.node === victim) continue
      assert.equal(o.error, undefined, `${o.node.name}'s pull (not the victim's): ${o.error?.message}`)
      await assertHoldsImage(o.node, image)
    }
    const own = outcomes.find((o) => o.node === victim)
    if (own?.error !== undefined) {
      const started = performance.now()
      await victim.pull(image.ref, { timeoutMs: pullBoundMs })
      t.diagnostic(`${victim.name}'s own pull had failed (${own.error.message.split('\n')[0]}); pulled again in ${((performance.now() - started) / 1000).toFixed(1)} s`)
    }
    await assertHoldsImage(victim, image)
    const up = await upstreamBlobBytes(cluster, image)
    t.diagnostic(`upstream served ${up.multiple.toFixed(2)}× the image (${up.byNode})`)
  }

  it('the downloading node\'s daemon is killed mid-blob: the other nodes still get the image, no pull hangs', async (t) => {
    const image = images.get('kill-daemon')!
    const { victim, outcomes } = await killDownloaderMidBlob(t, image, async (node) => {
      t.diagnostic(`killing ${node.name}'s daemon (SIGKILL)`)
      await node.killDaemon()
    })
    // Back to a full cluster before checking (node 1 is everyone's bootstrap peer: point it at a live node).
    const live = nodes.find((n) => n !== victim)!
    await victim.startDaemon(victim.index === 1 ? { bootstrapPeers: [live.routerAddr] } : {})
    await assertRecovered(t, image, victim, outcomes)
  })

  it('the downloading node\'s containerd is killed mid-blob: the other nodes still get the image, no pull hangs', async (t) => {
    const image = images.get('kill-containerd')!
    const { victim, outcomes } = await killDownloaderMidBlob(t, image, async (node) => {
      const pid = node.containerd.pid
      assert.ok(pid !== undefined)
      t.diagnostic(`killing ${node.name}'s containerd (SIGKILL, pid ${pid})`)
      process.kill(pid, 'SIGKILL')
      await waitFor(() => !isPidAlive(pid), { timeoutMs: 10_000, what: `${node.name}'s containerd to exit` })
    })
    await victim.containerd.restart()
    assert.ok(victim.daemon?.exitStatus === undefined, `${victim.name}'s daemon survived its containerd's death`)
    await assertRecovered(t, image, victim, outcomes)
  })
})
