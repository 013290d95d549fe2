// Acceptance test of "Never down, never over its memory limit": three daemons run as the container image runs them
// (the esbuild bundle, the ENTRYPOINT's node flags, the image's environment), each inside a real 128 MiB cgroup v1
// memory cgroup (a process over the limit is OOM-killed), and node 1's registry port is hit from this process with:
//   a. hundreds of local and peer-proxied downloads cut off at random points,
//   b. 100 slow (1 MiB/s) clients on a local blob and 100 on a proxied one at the same time,
//   c. 2,000 idle keep-alive connections,
//   d. a lying peer (a corrupted copy on disk) answering full and range requests.
// After every phase node 1 must still serve both blobs with the right bytes, and no daemon may have exited. Every
// daemon's RSS is sampled every 50 ms; at the end no daemon may have exited or been OOM-killed, and each one's peak
// RSS (VmHWM) must be under the limit. The figures are printed as a table.
//
// A daemon that dies is started again after its phase (which fails with its exit status and last output), so the
// later phases still run and report. SPEGEL_STRESS_ROOT=<dir> tests another checkout instead of this working tree,
// e.g. an older revision: `git archive REV | tar -x -C DIR && ln -s $PWD/node_modules DIR/`.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import http from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { createMemoryCgroup, joinCgroupCommand, memoryCgroupOf, requireMemoryCgroupV1 } from '../../helpers/cgroup.ts'
import { pushLargeBlobImage, type PushedImage } from '../../helpers/images.ts'
import { requireNetnsSupport } from '../../helpers/netns.ts'
import { isPidAlive, run, type ExitStatus, type ProcessHandle } from '../../helpers/process.ts'
import { waitFor } from '../../helpers/wait.ts'
import { metricsPort, readImageRuntime, registryPort, startSpegelCluster, type SpegelCluster, type SpegelNode } from '../../helpers/spegel-cluster.ts'
import { requireTool } from '../../helpers/tools.ts'

const MiB = 1024 * 1024
/** The chart's default memory limit, 128Mi. */
const memoryLimit = 128 * MiB
/** Content of each test layer (the blob is a tar of it, a little larger). */
const layerContentBytes = 60 * MiB

/** Statuses a loaded daemon may answer a blob GET with: served, or refused fast ("come back later" / "go upstream"). */
const acceptableStatuses = new Set([200, 206, 404, 429, 503])

interface TestBlob {
  kind: 'local' | 'proxied'
  repository: string
  digest: string
  size: number
  /** Path and query on node 1's mirror. */
  path: string
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP clients

interface Download {
  status: number
  headers: http.IncomingHttpHeaders
  /** Body bytes received. */
  bytes: number
  /** Content-Length of the response, NaN without one. */
  contentLength: number
  /** The whole body arrived (as many bytes as Content-Length, and the message ended cleanly). */
  complete: boolean
  sha256: string
  /** Why the transfer ended early, if it did. */
  error?: string
}

/** GET on a fresh connection, hashing the body as it streams (never held in memory). */
async function download (host: string, path: string, options: { range?: string, timeoutMs?: number } = {}): Promise<Download> {
  return await new Promise<Download>((resolve) => {
    const hash = createHash('sha256')
    let bytes = 0
    let settled = false
    const done = (d: Omit<Download, 'sha256' | 'bytes'>): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve({ ...d, bytes, sha256: hash.digest('hex') })
    }
    const req = http.get({ host, port: registryPort, path, agent: false, headers: options.range !== undefined ? { range: options.range } : {} }, (res) => {
      const contentLength = Number(res.headers['content-length'] ?? NaN)
      res.on('data', (chunk: Buffer) => { bytes += chunk.length; hash.update(chunk) })
      res.once('error', (err) => { done({ status: res.statusCode ?? 0, headers: res.headers, contentLength, complete: false, error: err.message }) })
      res.once('close', () => {
        const complete = res.complete && bytes === contentLength
        done({ status: res.statusCode ?? 0, headers: res.headers, contentLength, complete, ...(complete ? {} : { error: 'connection closed before the body was complete' }) })
      })
    })
    const timer = setTimeout(() => { req.destroy(new Error(`no complete answer within ${options.timeoutMs ?? 60_000} ms`)) }, options.timeoutMs ?? 60_000)
    req.once('error', (err) => { done({ status: 0, headers: {}, contentLength: NaN, complete: false, error: (err as NodeJS.ErrnoException).code ?? err.message }) })
  })
}

type CutOutcome =
  | 'complete' // the whole blob arrived before the cut
  | 'cut-before-body' // we hung up before any body byte (before or after the headers)
  | 'cut-in-body' // we hung up after part of the body
  | 'refused' // nothing listens: the daemon is down
  | 'server-closed' // the daemon ended the connection before the body was complete
  | 'server-reset' // the daemon reset the connection
  | 'stalled' // nothing happened for 20 s
  | 'status' // answered with something other than 200 (counted by status)

interface CutResult { outcome: CutOutcome, status: number, bodyBytes: number, how: string }

/** Requests `path` over a raw socket and hangs up after `cutAt` body bytes (0: right after sending the request). */
async function rawCut (host: string, path: string, cutAt: number, reset: boolean): Promise<CutResult> {
  return await new Promise<CutResult>((resolve) => {
    const how = `raw ${reset ? 'RST' : 'FIN'} after ${cutAt} B`
    let head = Buffer.alloc(0)
    let status = 0
    let contentLength = NaN
    let bodyBytes = 0
    let settled = false
    const socket: Socket = connect({ host, port: registryPort })
    const finish = (outcome: CutOutcome): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (reset) socket.resetAndDestroy()
      else socket.destroy()
      resolve({ outcome, status, bodyBytes, how })
    }
    const timer = setTimeout(() => { finish('stalled') }, 20_000)
    socket.once('connect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${registryPort}\r\nUser-Agent: stress-test\r\n\r\n`)
      if (cutAt === 0) finish('cut-before-body')
    })
    socket.on('data', (chunk: Buffer) => {
      if (settled) return
      if (status === 0) {
        head = Buffer.concat([head, chunk])
        const end = head.indexOf('\r\n\r\n')
        if (end === -1) return
        const text = head.subarray(0, end).toString('latin1')
        status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? -1)
        contentLength = Number(/\r\ncontent-length: *(\d+)/i.exec(text)?.[1] ?? NaN)
        bodyBytes = head.length - end - 4
        head = Buffer.alloc(0)
        if (status !== 200) { finish('status'); return }
      } else {
        bodyBytes += chunk.length
      }
      if (bodyBytes >= contentLength) finish('complete')
      else if (bodyBytes >= cutAt) finish(bodyBytes > 0 ? 'cut-in-body' : 'cut-before-body')
    })
    socket.once('end', () => { finish(status === 200 && bodyBytes >= contentLength ? 'complete' : 'server-closed') })
    socket.once('error', (err: NodeJS.ErrnoException) => {
      finish(err.code === 'ECONNREFUSED' ? 'refused' : err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'server-reset' : 'server-closed')
    })
  })
}

let curlBin = ''

/** curl with --max-time: it hangs up when the time is up, wherever the transfer is. */
async function curlCut (url: string, maxTimeMs: number): Promise<CutResult> {
  const how = `curl --max-time ${(maxTimeMs / 1000).toFixed(3)}`
  const res = await run(curlBin, ['-s', '-o', '/dev/null', '--max-time', (maxTimeMs / 1000).toFixed(3), '-w', '%{http_code} %{size_download} %{exitcode}', url], { allowNonZero: true, timeoutMs: 20_000 })
  const [code, size, exit] = res.stdout.trim().split(' ').map(Number) as [number, number, number]
  const status = Number.isFinite(code) ? code : 0
  const bodyBytes = Number.isFinite(size) ? size : 0
  // curl's exit codes: 0 done, 28 our timeout, 7 connection refused, 52 empty reply, 56 receive error, 18 short body.
  if (status !== 200 && status !== 0) return { outcome: 'status', status, bodyBytes, how }
  const outcome: CutOutcome = exit === 0
    ? 'complete'
    : exit === 28
      ? (bodyBytes > 0 ? 'cut-in-body' : 'cut-before-body')
      : exit === 7
        ? 'refused'
        : exit === 56
          ? 'server-reset'
          : 'server-closed'
  return { outcome, status, bodyBytes, how }
}

interface SlowResult { kind: TestBlob['kind'], status: number, retryAfter: string | undefined, bytes: number, exit: number, firstByteS: number, totalS: number }

/** A slow client: curl --limit-rate 1M, stopped by its own --max-time (curl still prints the write-out). */
async function slowClient (blob: TestBlob, url: string, seconds: number): Promise<SlowResult> {
  const res = await run(curlBin, [
    '-s', '-D', '-', '-o', '/dev/null', '--limit-rate', '1M', '--max-time', String(seconds),
    '-w', '\n@@ %{http_code} %{size_download} %{exitcode} %{time_starttransfer} %{time_total}\n', url,
  ], { allowNonZero: true, timeoutMs: (seconds + 20) * 1000 })
  const line = /^@@ (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)$/m.exec(res.stdout)
  const retryAfter = /^retry-after: *(.+?)\r?$/im.exec(res.stdout)?.[1]
  if (line === null) return { kind: blob.kind, status: 0, retryAfter, bytes: 0, exit: -1, firstByteS: NaN, totalS: NaN }
  return { kind: blob.kind, status: Number(line[1]), retryAfter, bytes: Number(line[2]), exit: Number(line[3]), firstByteS: Number(line[4]), totalS: Number(line[5]) }
}

/** Runs `jobs` with at most `width` at a time. */
async function pool<T> (width: number, jobs: ReadonlyArray<() => Promise<T>>): Promise<T[]> {
  const results: T[] = new Array<T>(jobs.length)
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < jobs.length) {
      const i = next++
      results[i] = await (jobs[i] as () => Promise<T>)()
    }
  }))
  return results
}

const randomInt = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1))

function count<T> (items: readonly T[], key: (item: T) => string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1
  return out
}

const fmtCounts = (c: Record<string, number>): string => Object.entries(c).sort().map(([k, v]) => `${k}=${v}`).join(' ')
const mib = (bytes: number): string => (bytes / MiB).toFixed(1)

// ---------------------------------------------------------------------------------------------------------------
// metrics

/** One sample of a Prometheus text exposition; labels must match exactly as written (e.g. `{source="local"}`). */
async function metric (node: SpegelNode, name: string, labels = '', timeoutMs = 5000): Promise<number> {
  const res = await fetch(`http://${node.ip}:${metricsPort}/metrics`, { signal: AbortSignal.timeout(timeoutMs) })
  const text = await res.text()
  for (const line of text.split('\n')) {
    if (line.startsWith(name + labels + ' ')) return Number(line.slice(name.length + labels.length + 1))
  }
  return 0
}

// ---------------------------------------------------------------------------------------------------------------
// monitoring

interface NodeFigures {
  /** Highest VmRSS sampled in the phase, KiB. */
  peakRssKiB: number
  /** Highest RssAnon sampled (heap, buffers: what cannot be reclaimed), KiB; the rest of RSS is mostly node's text. */
  peakAnonKiB: number
  /** VmHWM at the end of the phase (the process's lifetime peak), KiB. */
  hwmKiB: number
  /**
   * memory.max_usage_in_bytes of the phase: anonymous memory and page cache (node's text, blob files read), so it sits
   * at the limit whenever the kernel keeps reclaimable cache; only anonymous memory can get a daemon OOM-killed.
   */
  cgroupPeak: number
  /** memory.failcnt increase in the phase. */
  failcnt: number
  /** Highest http_requests_inflight{handler="/v2/*"} sampled. */
  maxInflight: number
  /** Samples of /metrics that failed or took over 2 s (a daemon too busy to answer them). */
  missedInflight: number
}

interface PhaseRecord {
  name: string
  seconds: number
  requests: number
  outcomes: string
  nodes: NodeFigures[]
}

interface DaemonExit { node: string, phase: string, pid: number, status: ExitStatus, oomKill: number, lastOutput: string }

/** Samples every daemon's RSS every 50 ms and its in-flight requests every 500 ms, and records every daemon exit. */
class Monitor {
  phase = 'setup'
  readonly exits: DaemonExit[] = []
  readonly phases: PhaseRecord[] = []
  /** Highest VmHWM seen per node over the whole run, all incarnations, KiB. */
  readonly hwmKiB: number[]
  private readonly nodes: readonly SpegelNode[]
  private current: NodeFigures[]
  private failcntAtStart: number[] = []
  private phaseStarted = performance.now()
  private rssTimer: NodeJS.Timeout | undefined
  private inflightTimer: NodeJS.Timeout | undefined
  private sampling = false
  private inflightBusy = false
  private closed = false
  private readonly watched = new Set<ProcessHandle>()
  /** The phase in which the sampler first found a daemon gone (its exit is reported up to a second later). */
  private readonly diedIn = new Map<number, string>()

  constructor (nodes: readonly SpegelNode[]) {
    this.nodes = nodes
    this.hwmKiB = nodes.map(() => 0)
    this.current = this.fresh()
  }

  private fresh (): NodeFigures[] {
    return this.nodes.map(() => ({ peakRssKiB: 0, peakAnonKiB: 0, hwmKiB: 0, cgroupPeak: 0, failcnt: 0, maxInflight: 0, missedInflight: 0 }))
  }

  start (): void {
    for (const node of this.nodes) this.watch(node)
    this.rssTimer = setInterval(() => { void this.sampleRss() }, 50)
    this.inflightTimer = setInterval(() => { void this.sampleInflight() }, 500)
  }

  /** Records the exit of the node's current daemon (one not stopped by stop()). */
  watch (node: SpegelNode): void {
    const proc = node.daemon
    if (proc === undefined || this.watched.has(proc)) return
    this.watched.add(proc)
    void proc.waitForExit().then(async (status) => {
      if (this.closed) return
      const oomKill = (await node.cgroup?.oomControl().catch(() => undefined))?.oomKill ?? -1
      // A crash prints a line of minified bundle: keep lines short.
      const lastOutput = proc.output().trimEnd().split('\n').slice(-30).map((l) => l.length > 300 ? `${l.slice(0, 300)}…` : l).join('\n')
      this.exits.push({ node: node.name, phase: this.diedIn.get(proc.pid) ?? this.phase, pid: proc.pid, status, oomKill, lastOutput })
    })
  }

  private async sampleRss (): Promise<void> {
    if (this.sampling) return
    this.sampling = true
    try {
      await Promise.all(this.nodes.map(async (node, i) => {
        const pid = node.daemon?.pid
        if (pid === undefined) return
        let status: string
        try {
          status = await readFile(`/proc/${pid}/status`, 'utf8')
        } catch {
          if (!this.diedIn.has(pid)) this.diedIn.set(pid, this.phase)
          return
        }
        if (/^State:\s+Z/m.test(status)) {
          if (!this.diedIn.has(pid)) this.diedIn.set(pid, this.phase)
          return
        }
        const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0)
        const hwm = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0)
        const anon = Number(/^RssAnon:\s+(\d+) kB/m.exec(status)?.[1] ?? 0)
        const figures = this.current[i] as NodeFigures
        figures.peakRssKiB = Math.max(figures.peakRssKiB, rss)
        figures.peakAnonKiB = Math.max(figures.peakAnonKiB, anon)
        figures.hwmKiB = Math.max(figures.hwmKiB, hwm)
        this.hwmKiB[i] = Math.max(this.hwmKiB[i] ?? 0, hwm)
      }))
    } finally {
      this.sampling = false
    }
  }

  private async sampleInflight (): Promise<void> {
    if (this.inflightBusy) return
    this.inflightBusy = true
    try {
      await Promise.all(this.nodes.map(async (node, i) => {
        if (node.daemon?.exitStatus !== undefined) return
        const n = await metric(node, 'http_requests_inflight', '{handler="/v2/*"}', 2000).catch(() => undefined)
        const figures = this.current[i] as NodeFigures
        if (n === undefined) figures.missedInflight++
        else figures.maxInflight = Math.max(figures.maxInflight, n)
      }))
    } finally {
      this.inflightBusy = false
    }
  }

  async begin (name: string): Promise<void> {
    this.phase = name
    this.current = this.fresh()
    this.phaseStarted = performance.now()
    this.failcntAtStart = await Promise.all(this.nodes.map(async (n) => await n.cgroup?.failcnt() ?? 0))
    await Promise.all(this.nodes.map(async (n) => { await n.cgroup?.resetMaxUsage() }))
  }

  async end (requests: number, outcomes: string): Promise<PhaseRecord> {
    await this.sampleRss()
    const nodes = this.current
    await Promise.all(this.nodes.map(async (n, i) => {
      const figures = nodes[i] as NodeFigures
      figures.cgroupPeak = await n.cgroup?.maxUsageBytes() ?? 0
      figures.failcnt = (await n.cgroup?.failcnt() ?? 0) - (this.failcntAtStart[i] ?? 0)
    }))
    const record = { name: this.phase, seconds: (performance.now() - this.phaseStarted) / 1000, requests, outcomes, nodes }
    this.phases.push(record)
    return record
  }

  stop (): void {
    this.closed = true
    clearInterval(this.rssTimer)
    clearInterval(this.inflightTimer)
  }

  table (): string {
    const rows = [
      ['phase', 's', 'requests', 'peak RSS n1/n2/n3 MiB', 'of it anon', 'VmHWM n1/n2/n3', 'cgroup peak n1/n2/n3', 'in flight n1/n2/n3 (missed)', 'outcomes'],
      ...this.phases.map((p) => [
        p.name,
        p.seconds.toFixed(1),
        String(p.requests),
        p.nodes.map((n) => mib(n.peakRssKiB * 1024)).join('/'),
        p.nodes.map((n) => mib(n.peakAnonKiB * 1024)).join('/'),
        p.nodes.map((n) => mib(n.hwmKiB * 1024)).join('/'),
        p.nodes.map((n) => mib(n.cgroupPeak)).join('/'),
        p.nodes.map((n) => `${n.maxInflight}${n.missedInflight > 0 ? `(${n.missedInflight})` : ''}`).join('/'),
        p.outcomes,
      ]),
    ]
    // Every column padded to its widest cell but the last (the outcomes, which may be long).
    const widths = (rows[0] ?? []).map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)))
    return rows.map((r) => r.map((cell, c) => c === r.length - 1 ? cell : cell.padEnd(widths[c] ?? 0)).join(' | ')).join('\n')
  }
}

// ---------------------------------------------------------------------------------------------------------------

describe('never down, never over its memory limit: 3 daemons as the image runs them, each in a 128 MiB cgroup', { timeout: 6 * 60_000 }, () => {
  let cluster: SpegelCluster
  let nodes: [SpegelNode, SpegelNode, SpegelNode]
  let n1: SpegelNode
  let monitor: Monitor
  let local: TestBlob
  let proxied: TestBlob
  /** Lines the daemons printed outside their JSON log (a crash's stack trace) and JSON records of level WARN and up. */
  const plainLines: Array<{ node: string, line: string }> = []
  const warnings: Array<{ node: string, level: string, msg: string }> = []

  const blobOf = (image: PushedImage, kind: TestBlob['kind']): TestBlob => {
    const layer = image.manifests[0]?.layers[0]
    assert.ok(layer !== undefined, `${image.ref} has a layer`)
    return { kind, repository: image.repository, digest: layer.digest, size: layer.size, path: `/v2/${image.repository}/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstreamHost)}` }
  }
  const urlOf = (blob: TestBlob): string => `http://${n1.ip}:${registryPort}${blob.path}`

  /**
   * What follows every phase: no daemon exited, and node 1 serves both blobs with the right bytes. A daemon that died is
   * started again (so the next phases still run and report), and the phase fails with the evidence.
   */
  const checkAfterPhase = async (t: TestContext, phase: string): Promise<void> => {
    const pause = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
    // A crash may take a moment to happen (the daemon handles the last hang-ups of a phase after they are made).
    await pause(300)
    // 30 s for 60 MB on loopback: a daemon that is alive but cannot serve in that time is down for its clients.
    const downloads = await Promise.all([local, proxied].map(async (blob) => ({ blob, d: await download(n1.ip, blob.path, { timeoutMs: 30_000 }) })))
    await pause(300)
    const dead = nodes.filter((n) => n.daemon === undefined || n.daemon.exitStatus !== undefined || !isPidAlive(n.daemon.pid))
    const evidence: string[] = []
    if (dead.length > 0) {
      const deadPids = new Set(dead.map((n) => n.daemon?.pid))
      await waitFor(() => monitor.exits.filter((e) => deadPids.has(e.pid)).length >= dead.length, { timeoutMs: 5000 }).catch(() => {})
      for (const e of monitor.exits.filter((x) => deadPids.has(x.pid))) {
        evidence.push(`${e.node} (pid ${e.pid}) exited during phase ${e.phase}: code ${String(e.status.code)}, signal ${String(e.status.signal)}, cgroup oom_kill ${e.oomKill}; its last output:\n${e.lastOutput}`)
      }
      for (const node of dead) {
        const live = nodes.find((n) => !dead.includes(n))
        t.diagnostic(`restarting ${node.name} so the following phases still run (this phase has failed)`)
        try {
          await node.startDaemon(node === n1 && live !== undefined ? { bootstrapPeers: [live.routerAddr] } : {})
          monitor.watch(node)
        } catch (err) {
          evidence.push(`${node.name} could not be restarted: ${(err as Error).message}`)
        }
      }
      await cluster.waitServable(n1, proxied.repository, 'blobs', proxied.digest, { timeoutMs: 60_000 }).catch((err: unknown) => {
        evidence.push(`node 1 did not serve the proxied blob again after the restart: ${(err as Error).message}`)
      })
    }
    assert.deepEqual(evidence, [], `no daemon may exit during phase ${phase} or the check after it`)
    for (const { blob, d } of downloads) {
      assert.equal(d.status, 200, `after phase ${phase}: node 1 answers the ${blob.kind} blob with 200 (${d.error ?? ''})`)
      assert.ok(d.complete, `after phase ${phase}: the ${blob.kind} blob arrives whole (${d.bytes} of ${blob.size} bytes; ${d.error ?? ''})`)
      assert.equal(`sha256:${d.sha256}`, blob.digest, `after phase ${phase}: the ${blob.kind} blob has the right bytes`)
    }
  }

  const report = (t: TestContext, record: PhaseRecord): void => {
    const figures = record.nodes.map((n, i) => `n${i + 1} RSS ${mib(n.peakRssKiB * 1024)} MiB (anon ${mib(n.peakAnonKiB * 1024)}, HWM ${mib(n.hwmKiB * 1024)}, cgroup ${mib(n.cgroupPeak)}, in flight ${n.maxInflight}${n.missedInflight > 0 ? `, ${n.missedInflight} samples missed` : ''})`).join('; ')
    const line = `phase ${record.name}: ${record.requests} requests in ${record.seconds.toFixed(1)} s; ${record.outcomes}; ${figures}`
    t.diagnostic(line)
    console.log(line)
  }

  before(async () => {
    requireNetnsSupport()
    requireMemoryCgroupV1()
    curlBin = requireTool('curl', 'apt-get install -y curl')
    cluster = await startSpegelCluster({
      nodes: 3,
      prefix: 'spgstress',
      // SPEGEL_STRESS_ROOT: another checkout (with node_modules) to test instead of this working tree.
      image: { memoryLimitBytes: memoryLimit, nofile: 65_536, ...(process.env.SPEGEL_STRESS_ROOT !== undefined ? { root: process.env.SPEGEL_STRESS_ROOT } : {}) },
      // A generous resolve timeout: on a loaded 2-core machine a lookup can exceed the 20 ms default.
      daemonArgs: ['--mirror-resolve-timeout=2s'],
      maxLogRecords: 5000,
      onOutput: (node, line) => { if (!line.startsWith('{')) plainLines.push({ node: node.name, line }) },
      onLog: (node, record) => {
        const level = String(record.level ?? '')
        if (level === 'WARN' || level === 'ERROR' || level === 'FATAL') warnings.push({ node: node.name, level, msg: String(record.msg ?? '') })
      },
    })
    nodes = cluster.nodes as [SpegelNode, SpegelNode, SpegelNode]
    n1 = nodes[0]
    const [, n2, n3] = nodes
    // Node 1 holds the local image; only nodes 2 and 3 hold the proxied one (node 1 serves it from them).
    const localImage = await pushLargeBlobImage(cluster.upstreamHost, layerContentBytes, { repository: 'stress/local' })
    const proxiedImage = await pushLargeBlobImage(cluster.upstreamHost, layerContentBytes, { repository: 'stress/proxied' })
    local = blobOf(localImage, 'local')
    proxied = blobOf(proxiedImage, 'proxied')
    await Promise.all([
      n1.pull(localImage.ref, { contentOnly: true, mirrors: false }),
      n2.pull(proxiedImage.ref, { contentOnly: true, mirrors: false }),
      n3.pull(proxiedImage.ref, { contentOnly: true, mirrors: false }),
    ])
    await cluster.waitServable(n1, local.repository, 'blobs', local.digest)
    await cluster.waitServable(n1, proxied.repository, 'blobs', proxied.digest, { timeoutMs: 60_000 })
    monitor = new Monitor(nodes)
    monitor.start()
  })

  after(async () => {
    monitor?.stop()
    if (monitor !== undefined && cluster !== undefined) {
      const oom = await Promise.all(nodes.map(async (n) => await n.cgroup?.oomControl().catch(() => undefined)))
      const failcnt = await Promise.all(nodes.map(async (n) => await n.cgroup?.failcnt().catch(() => -1)))
      const lines = [
        '',
        `memory-limit stress: ${mib(memoryLimit)} MiB cgroup per daemon; layers ${local?.size ?? '?'} B (local on node 1) and ${proxied?.size ?? '?'} B (proxied from nodes 2 and 3)`,
        monitor.table(),
        ...nodes.map((n, i) => `${n.name}: VmHWM ${mib((monitor.hwmKiB[i] ?? 0) * 1024)} MiB, oom_kill ${oom[i]?.oomKill ?? '?'}, failcnt ${failcnt[i] ?? '?'}, exits ${monitor.exits.filter((e) => e.node === n.name).map((e) => `${e.phase}:${String(e.status.code)}/${String(e.status.signal)}`).join(',') || 'none'}`),
        // A crash prints its error outside the JSON log: "SendFileError: write failed", then the stack.
        `daemon output outside the JSON log: ${plainLines.length} lines, ${plainLines.filter((l) => /unhandled|uncaught/i.test(l.line)).length} mentioning unhandled/uncaught; ` +
        `error lines: ${fmtCounts(count(plainLines.filter((l) => /^\s*(\w*Error|\w+Exception)\b.{0,200}$/.test(l.line)), (l) => `${l.node} "${l.line.trim()}"`)) || 'none'}`,
        `daemon log records WARN and up: ${fmtCounts(count(warnings, (w) => `${w.node} ${w.level} "${w.msg}"`)) || 'none'}`,
      ]
      console.log(lines.join('\n'))
    }
    await cluster?.stop()
  })

  it('runs each daemon as the image does: the bundle, the ENTRYPOINT flags, the image env, its own 128 MiB cgroup', async (t) => {
    const { nodeFlags } = await readImageRuntime(join(process.env.SPEGEL_STRESS_ROOT ?? join(import.meta.dirname, '../../..'), 'Dockerfile'))
    // The heap is sized from the cgroup limit, with a small young generation (the issue's premise).
    for (const flag of ['--max-old-space-size-percentage=50', '--max-semi-space-size=1']) assert.ok(nodeFlags.includes(flag), `the ENTRYPOINT passes ${flag}: ${nodeFlags.join(' ')}`)
    t.diagnostic(`node flags from the Dockerfile: ${nodeFlags.join(' ')}`)
    for (const node of nodes) {
      const proc = node.daemon
      assert.ok(proc !== undefined && proc.exitStatus === undefined, `${node.name} runs`)
      const cgroup = node.cgroup
      assert.ok(cgroup !== undefined, `${node.name} has a cgroup`)
      assert.equal(await memoryCgroupOf(proc.pid), `/${cgroup.name}`, `${node.name}: /proc/${proc.pid}/cgroup names its memory cgroup`)
      assert.equal(cgroup.limitBytes, memoryLimit)
      const argv = (await readFile(`/proc/${proc.pid}/cmdline`, 'utf8')).split('\0').filter((a) => a !== '')
      assert.match(argv[0] ?? '', /\/nodejs\/bin\/node$/, `${node.name} runs its own node binary itself (the wrapper exec'd): ${argv.join(' ')}`)
      assert.deepEqual(argv.slice(1, 1 + nodeFlags.length), nodeFlags, `${node.name} gets the ENTRYPOINT's node flags`)
      assert.match(argv[1 + nodeFlags.length] ?? '', /\/app\/dist\/spegel\.mjs$/)
      assert.equal(argv[2 + nodeFlags.length], 'registry')
      const environ = new Set((await readFile(`/proc/${proc.pid}/environ`, 'utf8')).split('\0'))
      for (const v of ['MALLOC_ARENA_MAX=2', 'MALLOC_MMAP_THRESHOLD_=131072', 'NODE_ENV=production']) assert.ok(environ.has(v), `${node.name} has ${v}`)
      assert.ok(![...environ].some((v) => v.startsWith('NODE_TEST_CONTEXT=')), `${node.name} gets only the image's environment`)
      const limits = await readFile(`/proc/${proc.pid}/limits`, 'utf8')
      const nofile = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? 0)
      assert.ok(nofile >= 4096, `${node.name} may open enough files for 2,000 connections (${nofile})`)
    }
    // What Node reads for --max-old-space-size-percentage: the same wrapper, same namespace, a throwaway cgroup.
    const cg = await createMemoryCgroup({ limitBytes: memoryLimit, prefix: 'spgstress-probe' })
    try {
      const argv = joinCgroupCommand(cg, [process.execPath, ...nodeFlags, '-e',
        'console.log(JSON.stringify({ constrained: process.constrainedMemory(), heap: require("v8").getHeapStatistics().heap_size_limit }))'])
      const out = await run(argv[0] as string, argv.slice(1), { netns: n1.netns, timeoutMs: 30_000 })
      const seen = JSON.parse(out.stdout) as { constrained: number, heap: number }
      t.diagnostic(`inside the cgroup: process.constrainedMemory() = ${seen.constrained}, V8 heap limit ${mib(seen.heap)} MiB`)
      assert.equal(seen.constrained, memoryLimit, 'Node sees the cgroup limit')
      assert.ok(seen.heap < memoryLimit * 0.6, `the V8 heap limit follows it (${seen.heap})`)
    } finally {
      await cg.remove()
    }
    await monitor.begin('start')
    report(t, await monitor.end(0, 'daemons ready, images in place'))
  })

  it('a. survives hundreds of local and proxied downloads cut off at random points', async (t) => {
    await monitor.begin('a hang-ups')
    const perKind = 300
    const jobs: Array<() => Promise<CutResult & { kind: TestBlob['kind'] }>> = []
    for (const blob of [local, proxied]) {
      for (let i = 0; i < perKind; i++) {
        if (i % 2 === 0) {
          const ms = randomInt(5, 300)
          jobs.push(async () => ({ kind: blob.kind, ...await curlCut(urlOf(blob), ms) }))
        } else {
          // A quarter right away or in the first bytes, most within the first MiBs, some anywhere in the blob.
          const r = Math.random()
          const cutAt = r < 0.1 ? 0 : r < 0.45 ? randomInt(1, 256 * 1024) : r < 0.85 ? randomInt(256 * 1024, 8 * MiB) : randomInt(8 * MiB, blob.size - 1)
          const reset = Math.random() < 0.5
          jobs.push(async () => ({ kind: blob.kind, ...await rawCut(n1.ip, blob.path, cutAt, reset) }))
        }
      }
    }
    jobs.sort(() => Math.random() - 0.5)
    const results = await pool(30, jobs)
    const outcomes = count(results, (r) => `${r.kind}:${r.outcome === 'status' ? String(r.status) : r.outcome}`)
    report(t, await monitor.end(results.length, fmtCounts(outcomes)))
    await checkAfterPhase(t, 'a hang-ups')
    assert.equal(results.filter((r) => r.outcome === 'refused').length, 0, `no connection refused (the daemon was down): ${fmtCounts(outcomes)}`)
    const badStatus = results.filter((r) => r.outcome === 'status' && !acceptableStatuses.has(r.status))
    assert.deepEqual(badStatus.map((r) => `${r.kind} ${r.status} (${r.how})`), [], 'every answer is 200 or a refusal (404/429/503)')
    for (const kind of ['local', 'proxied'] as const) {
      const midBody = results.filter((r) => r.kind === kind && r.outcome === 'cut-in-body').length
      assert.ok(midBody >= 100, `at least 100 ${kind} downloads were cut off in the middle of the body (${midBody}): the phase tested what it claims`)
    }
  })

  it('b. serves 100 slow clients on a local blob and 100 on a proxied blob at once, or refuses them fast', async (t) => {
    await monitor.begin('b slow clients')
    const seconds = 12
    const clients: Array<Promise<SlowResult>> = []
    for (let i = 0; i < 100; i++) {
      clients.push(slowClient(local, urlOf(local), seconds))
      clients.push(slowClient(proxied, urlOf(proxied), seconds))
    }
    const results = await Promise.all(clients)
    const outcomes = count(results, (r) => `${r.kind}:${r.status}/exit${r.exit}`)
    const served = results.filter((r) => r.status === 200)
    const record = await monitor.end(results.length, `${fmtCounts(outcomes)}; mean MiB per served client ${mib(served.reduce((s, r) => s + r.bytes, 0) / Math.max(1, served.length))}`)
    report(t, record)
    await checkAfterPhase(t, 'b slow clients')
    const bad = results.filter((r) => !acceptableStatuses.has(r.status) || (r.exit !== 0 && r.exit !== 28))
    assert.deepEqual(bad.map((r) => `${r.kind}: status ${r.status}, curl exit ${r.exit}, ${r.bytes} B`), [],
      'every slow client got 200 (until we stopped it) or a refusal; none was reset or cut by the daemon')
    // 429/503 at once with Retry-After; a 404 ("pull from the upstream") after at most a short wait in line: 2 s in the
    // budget's line, plus what 200 clients arriving at once cost three daemons in 128 MiB on 2 cores (404s at
    // 5.1-5.6 s were seen once in about 15 runs; what this guards against is a wait for the stall timeout, 30 s).
    const refusedSlowly = results.filter((r) => ((r.status === 429 || r.status === 503) && (r.retryAfter === undefined || r.totalS > 2)) || (r.status === 404 && r.totalS > 8))
    assert.deepEqual(refusedSlowly.map((r) => `${r.kind}: ${r.status} after ${r.totalS} s, Retry-After ${String(r.retryAfter)}`), [], 'a refusal comes fast (and a 429/503 says when to retry)')
    for (const kind of ['local', 'proxied'] as const) {
      const ok = served.filter((r) => r.kind === kind && r.bytes > 0)
      assert.ok(ok.length > 0, `node 1 served ${kind} bytes to some slow clients (${ok.length})`)
    }
  })

  it('c. keeps serving with 2,000 idle connections open (half keep-alive after GET /v2/, half without a request)', async (t) => {
    await monitor.begin('c idle conns')
    const total = 2000
    interface Idle { socket: Socket, withRequest: boolean, status?: number, error?: string, endedByServer: boolean }
    const conns: Idle[] = []
    const openOne = async (withRequest: boolean): Promise<void> => {
      await new Promise<void>((resolve) => {
        const socket = connect({ host: n1.ip, port: registryPort })
        const c: Idle = { socket, withRequest, endedByServer: false }
        conns.push(c)
        let head = ''
        let done = false
        const settle = (): void => { if (!done) { done = true; clearTimeout(timer); resolve() } }
        const timer = setTimeout(() => { c.error ??= 'no answer in 20 s'; settle() }, 20_000)
        socket.once('connect', () => {
          if (!withRequest) { settle(); return }
          socket.write(`GET /v2/ HTTP/1.1\r\nHost: ${n1.ip}:${registryPort}\r\nConnection: keep-alive\r\n\r\n`)
        })
        socket.on('data', (chunk: Buffer) => {
          if (c.status !== undefined) return
          head += chunk.toString('latin1')
          const status = /^HTTP\/1\.1 (\d{3})/.exec(head)
          if (status !== null && head.includes('\r\n\r\n')) { c.status = Number(status[1]); settle() }
        })
        // 'end' is the daemon closing its side (our destroy() at the end emits none): its idle-connection limit.
        socket.once('end', () => { c.endedByServer = true })
        socket.once('close', () => { settle() })
        socket.once('error', (err: NodeJS.ErrnoException) => { c.error = err.code ?? err.message; settle() })
      })
    }
    let holdChecks: Download[]
    let openAfterAll = 0
    try {
      for (let i = 0; i < total; i += 100) await Promise.all(Array.from({ length: Math.min(100, total - i) }, async (_, j) => { await openOne((i + j) % 2 === 0) }))
      openAfterAll = conns.filter((c) => !c.socket.destroyed && !c.endedByServer).length
      // Held open, idle. Meanwhile node 1 must still serve both blobs whole.
      const holdStarted = performance.now()
      holdChecks = await Promise.all([local, proxied].map(async (b) => await download(n1.ip, b.path)))
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 5000 - (performance.now() - holdStarted))))
    } finally {
      const openAtEnd = conns.filter((c) => !c.socket.destroyed && !c.endedByServer).length
      for (const c of conns) c.socket.destroy()
      const outcomes = {
        connections: conns.length,
        openAfterAll,
        openAtEnd,
        ...count(conns.filter((c) => c.status !== undefined), (c) => `answered${c.status}`),
        ...count(conns.filter((c) => c.endedByServer), (c) => c.withRequest ? (c.status !== undefined ? 'closedByServerAfterAnswer' : 'closedByServerUnanswered') : 'closedByServerNoRequest'),
        ...count(conns.filter((c) => c.error !== undefined), (c) => `error-${c.error}`),
      }
      report(t, await monitor.end(total, fmtCounts(outcomes)))
    }
    await checkAfterPhase(t, 'c idle conns')
    assert.equal(conns.length, total)
    const refused = conns.filter((c) => c.error === 'ECONNREFUSED')
    assert.equal(refused.length, 0, 'no connection was refused (nothing listening: the daemon was down)')
    const unexpected = conns.filter((c) => c.status !== undefined && c.status !== 200 && c.status !== 429 && c.status !== 503)
    assert.deepEqual(unexpected.map((c) => c.status), [], 'GET /v2/ answered 200 (or a refusal)')
    // Closing idle connections (FIN) is the daemon's right; a connection left hanging without answer or close is not.
    const hanging = conns.filter((c) => c.error === 'no answer in 20 s')
    assert.equal(hanging.length, 0, 'every GET /v2/ was answered or its connection closed')
    for (const [i, blob] of [local, proxied].entries()) {
      const d = holdChecks[i]
      assert.ok(d !== undefined && d.status === 200 && d.complete && `sha256:${d.sha256}` === blob.digest,
        `with 2,000 idle connections opened, node 1 served the ${blob.kind} blob whole and right (status ${d?.status}, ${d?.bytes} B, ${d?.error ?? ''})`)
    }
  })

  it('d. never delivers a lying peer\'s bytes as a complete response, full or ranged, and then serves from an honest peer', async (t) => {
    await monitor.begin('d lying peer')
    const [, n2, n3] = nodes
    // The truth, from a copy on disk checked against its digest.
    const truth = await readFile(join(n3.containerd.contentPath, 'blobs', 'sha256', proxied.digest.slice('sha256:'.length)))
    assert.equal(`sha256:${createHash('sha256').update(truth).digest('hex')}`, proxied.digest)
    // The liar is the holder node 1 fetches from now (node 2 unless node 1 prefers node 3), so it is certainly asked.
    const servedBefore = await Promise.all([n2, n3].map(async (n) => await metric(n, 'spegel_served_bytes_total', '{source="local"}')))
    const probe = await download(n1.ip, proxied.path)
    assert.ok(probe.complete && `sha256:${probe.sha256}` === proxied.digest, 'node 1 serves the proxied blob before the corruption')
    await new Promise((resolve) => setTimeout(resolve, 300))
    const servedAfter = await Promise.all([n2, n3].map(async (n) => await metric(n, 'spegel_served_bytes_total', '{source="local"}')))
    const [d2, d3] = servedAfter.map((v, i) => v - (servedBefore[i] ?? 0)) as [number, number]
    const liar = d3 > d2 ? n3 : n2
    const honest = liar === n2 ? n3 : n2
    // Corrupt one byte in the middle of the liar's copy, in place: its daemon reads the blob file directly.
    const corruptAt = Math.floor(proxied.size / 2)
    const file = await open(join(liar.containerd.contentPath, 'blobs', 'sha256', proxied.digest.slice('sha256:'.length)), 'r+')
    try {
      const one = Buffer.alloc(1)
      await file.read(one, 0, 1, corruptAt)
      one[0] = (one[0] as number) ^ 0xff
      await file.write(one, 0, 1, corruptAt)
    } finally {
      await file.close()
    }
    t.diagnostic(`the liar is ${liar.name} (it served ${liar === n2 ? d2 : d3} B of the probe, ${honest.name} ${liar === n2 ? d3 : d2} B); byte ${corruptAt} of ${proxied.size} flipped`)
    const failuresBefore = await metric(n1, 'spegel_verification_failures_total')

    const expectedHash = (start: number, end: number): string => createHash('sha256').update(truth.subarray(start, end + 1)).digest('hex')
    const requests: Array<{ label: string, range?: string, start: number, end: number }> = [
      // Ranges first in every round: a liar caught by a full GET first would hide unverified ranges.
      { label: 'range to end', range: `bytes=${corruptAt - 4096}-`, start: corruptAt - 4096, end: proxied.size - 1 },
      { label: 'range inside', range: `bytes=${corruptAt - 65_536}-${corruptAt + 65_536}`, start: corruptAt - 65_536, end: corruptAt + 65_536 },
      { label: 'range clean', range: 'bytes=0-1048575', start: 0, end: 1_048_575 },
      { label: 'full', start: 0, end: proxied.size - 1 },
    ]
    interface Answer { round: number, caught: boolean, label: string, verdict: 'correct' | 'WRONG' | 'cut' | 'refused' | 'bad-status' | 'bad-range', detail: string }
    const answers: Answer[] = []
    let caughtAtRound: number | undefined
    const roundsAfterCaught = 3
    const maxRounds = 15
    for (let round = 1; round <= maxRounds; round++) {
      const caught = caughtAtRound !== undefined
      for (const r of requests) {
        const d = await download(n1.ip, proxied.path, r.range !== undefined ? { range: r.range } : {})
        const want = r.range !== undefined ? 206 : 200
        const detail = `status ${d.status}, ${d.bytes}/${d.contentLength} B${d.error !== undefined ? `, ${d.error}` : ''}`
        let verdict: Answer['verdict']
        if (d.status === 404 || d.status === 429 || d.status === 503) verdict = 'refused'
        else if (d.status !== want) verdict = 'bad-status'
        else if (r.range !== undefined && d.headers['content-range'] !== `bytes ${r.start}-${r.end}/${proxied.size}`) verdict = 'bad-range'
        else if (!d.complete) verdict = 'cut'
        else verdict = d.sha256 === expectedHash(r.start, r.end) ? 'correct' : 'WRONG'
        answers.push({ round, caught, label: r.label, verdict, detail })
      }
      if (caughtAtRound === undefined && await metric(n1, 'spegel_verification_failures_total') > failuresBefore) caughtAtRound = round
      if (caughtAtRound !== undefined && round - caughtAtRound >= roundsAfterCaught) break
    }
    const failuresAfter = await metric(n1, 'spegel_verification_failures_total')
    const outcomes = count(answers, (a) => `${a.caught ? 'after' : 'before'}-caught:${a.label.replace(/ /g, '-')}:${a.verdict}`)
    report(t, await monitor.end(answers.length + 1, `liar ${liar.name}, caught in round ${String(caughtAtRound)}, verification failures ${failuresBefore}->${failuresAfter}; ${fmtCounts(outcomes)}`))
    await checkAfterPhase(t, 'd lying peer')
    const wrong = answers.filter((a) => a.verdict === 'WRONG')
    assert.deepEqual(wrong.map((a) => `round ${a.round} ${a.label}: ${a.detail}`), [], 'no response delivered a complete body with the liar\'s bytes')
    const malformed = answers.filter((a) => a.verdict === 'bad-status' || a.verdict === 'bad-range')
    assert.deepEqual(malformed.map((a) => `round ${a.round} ${a.label}: ${a.verdict} ${a.detail}`), [], 'answers are 200/206 with the asked range, or refusals')
    assert.ok(failuresAfter > failuresBefore, `node 1 counted the liar in spegel_verification_failures_total (${failuresBefore} -> ${failuresAfter})`)
    assert.ok(caughtAtRound !== undefined, `the liar was caught within ${maxRounds} rounds`)
    const afterCaught = answers.filter((a) => a.caught)
    assert.ok(afterCaught.length >= roundsAfterCaught * requests.length, 'requests were made after the liar was caught')
    const notRight = afterCaught.filter((a) => a.verdict !== 'correct')
    assert.deepEqual(notRight.map((a) => `round ${a.round} ${a.label}: ${a.verdict} ${a.detail}`), [], `once the liar is caught, node 1 serves the right bytes (from ${honest.name})`)
  })

  // Three separate verdicts, so one does not hide another.
  it('no daemon ever exited', () => {
    const exits = monitor.exits.map((e) => `${e.node} exited in phase ${e.phase} (code ${String(e.status.code)}, signal ${String(e.status.signal)}, oom_kill ${e.oomKill})`)
    assert.deepEqual(exits, [], 'no daemon exited')
  })

  it('no daemon was ever OOM-killed (memory.oom_control of each cgroup)', async () => {
    const kills = await Promise.all(nodes.map(async (n) => `${n.name} ${(await n.cgroup?.oomControl())?.oomKill}`))
    assert.deepEqual(kills, nodes.map((n) => `${n.name} 0`))
  })

  it('every daemon\'s peak RSS (VmHWM, all incarnations) stayed under the 128 MiB limit', (t) => {
    for (const [i, node] of nodes.entries()) t.diagnostic(`${node.name}: peak RSS (VmHWM) ${mib((monitor.hwmKiB[i] ?? 0) * 1024)} MiB of ${mib(memoryLimit)} MiB`)
    for (const [i, node] of nodes.entries()) {
      const hwm = (monitor.hwmKiB[i] ?? 0) * 1024
      assert.ok(hwm > 0, `${node.name}'s RSS was sampled`)
    }
    const over = nodes.flatMap((n, i) => ((monitor.hwmKiB[i] ?? 0) * 1024 >= memoryLimit ? [`${n.name} ${mib((monitor.hwmKiB[i] ?? 0) * 1024)} MiB`] : []))
    assert.deepEqual(over, [], `peak RSS under ${mib(memoryLimit)} MiB`)
  })
})
