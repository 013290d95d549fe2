// A whole Spegel cluster on one machine: network namespaces (./netns.ts), one containerd and one `spegel registry` per
// node started inside the node's namespace, the node's hosts.toml written by `spegel configuration`, and one upstream
// docker-registry in its own namespace. Used by the multi-node test, `npm run demo` and bench/p2p-pull.ts.
//
// Every node uses the production ports (registry 5000, router 5001, metrics 9090) on its own address; node 1 is the
// static bootstrap peer of all. The test process reaches every node through the cluster's host link.
//
// With `image`, each daemon runs the way the container image runs it (see the Dockerfile): the esbuild bundle in an
// /app-like directory, the ENTRYPOINT's node flags, only the image's environment, and inside a memory cgroup of its
// own with the pod's limit (./cgroup.ts), so Node sizes its heap from that limit as it does in a pod.
import { httpsStatus, type TestCertDir } from './tls.ts'
import { cp, mkdir, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createMemoryCgroup, joinCgroupCommand, memoryCgroupOf, requireMemoryCgroupV1, type MemoryCgroup } from './cgroup.ts'
import { startContainerd, type ContainerdInstance } from './containerd.ts'
import { createCluster, type NetnsCluster, type NetnsMember } from './netns.ts'
import { run, startProcess, type ProcessHandle } from './process.ts'
import { waitFor } from './wait.ts'
import { startRegistry, type RegistryHandle } from './registry.ts'
import { cliPath, runSpegel } from './spegel.ts'
import { makeTempDir, type TempDir } from './tmp.ts'
import { requireKnownTool } from './tools.ts'

export const registryPort = 5000
export const routerPort = 5001
export const metricsPort = 9090
export const httpBootstrapPort = 5002

/** One parsed JSON log line of a daemon (pino). */
export interface DaemonLogRecord {
  level?: string
  time?: string
  msg?: string
  [key: string]: unknown
}

export interface PullOptions {
  /** Go through the node's hosts.toml (its mirror first, the upstream as fallback). Default true. */
  mirrors?: boolean
  /** `ctr content fetch` (no unpack; also works for artifacts) instead of `ctr images pull`. */
  contentOnly?: boolean
  allPlatforms?: boolean
  platform?: string
  timeoutMs?: number
  signal?: AbortSignal
}

export interface SpegelNode {
  /** 1-based. */
  readonly index: number
  readonly name: string
  readonly net: NetnsMember
  readonly netns: string
  readonly ip: string
  readonly containerd: ContainerdInstance
  /** The hosts directory (containerd's config_path) holding the hosts.toml `spegel configuration` wrote. */
  readonly hostsDir: string
  /** `http://IP:5000`: the node's own mirror. */
  readonly mirrorUrl: string
  /** The running daemon, undefined while stopped. */
  readonly daemon: ProcessHandle | undefined
  /** libp2p peer id from the daemon's "running" log line (stable: the key is kept in the node's data dir). */
  readonly peerId: string | undefined
  /** Every JSON log line the daemons of this node wrote so far (all incarnations). */
  logs: () => DaemonLogRecord[]
  /** `ctr --address SOCKET -n k8s.io ARGS`, run inside the node's namespace (as a node-local client would be). */
  ctr: (args: readonly string[], options?: { timeoutMs?: number, signal?: AbortSignal }) => Promise<string>
  /** Pulls `ref` with ctr from inside the node's namespace. */
  pull: (ref: string, options?: PullOptions) => Promise<void>
  /** Digests in the node's content store. */
  contentDigests: () => Promise<Set<string>>
  /** Target digest of an image in the node's containerd, undefined when absent. */
  imageDigest: (name: string) => Promise<string | undefined>
  /** Removes images and then the given content (and lets containerd's GC run), so the next pull starts cold. */
  forget: (images: readonly string[], digests: readonly string[]) => Promise<void>
  /**
   * Starts the daemon (again) and waits for /readyz. `bootstrapPeers` replaces the cluster's static bootstrap list
   * (node 1): a restarted node 1 must be pointed at a live node, or it would stay alone until others re-bootstrap.
   * `daemonArgs` replaces the cluster's `daemonArgs` for this start and every later one (e.g. a benchmark comparing
   * two settings of a flag on the same nodes). `expectReady: false` waits only until the daemon runs (a node that is
   * meant not to join, whose /readyz stays 503).
   */
  startDaemon: (options?: { bootstrapPeers?: readonly string[], daemonArgs?: readonly string[], expectReady?: boolean }) => Promise<void>
  /** `/ip4/IP/tcp/5001`: the node's router address, for bootstrapPeers. */
  readonly routerAddr: string
  /** Graceful stop (SIGTERM). */
  stopDaemon: () => Promise<void>
  /** SIGKILL by PID, no goodbye to the DHT. */
  killDaemon: () => Promise<void>
  /** With the `image` option: the memory cgroup every incarnation of this node's daemon runs in. */
  readonly cgroup: MemoryCgroup | undefined
}

export interface SpegelCluster {
  readonly net: NetnsCluster
  readonly upstream: RegistryHandle
  /** `IP:5000` of the upstream, as used in image references. */
  readonly upstreamHost: string
  readonly nodes: readonly SpegelNode[]
  /** Waits until `node`'s mirror answers 200 to HEAD `/v2/REPO/(blobs|manifests)/REF?ns=<upstream>`. */
  waitServable: (node: SpegelNode, repository: string, kind: 'blobs' | 'manifests', reference: string, options?: { timeoutMs?: number }) => Promise<void>
  /** Stops every daemon, containerd and the upstream, and deletes the namespaces. Idempotent. */
  stop: () => Promise<void>
  [Symbol.asyncDispose]: () => Promise<void>
}

export interface StartSpegelClusterOptions {
  nodes?: number
  prefix?: string
  /** Daemon log level (default INFO; DEBUG adds one "served from peer" line per request served from a peer). */
  logLevel?: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR'
  /** Extra `spegel registry` flags, e.g. `--mirror-resolve-timeout=1s`. */
  daemonArgs?: readonly string[]
  /** Called with each parsed daemon log line. */
  onLog?: (node: SpegelNode, record: DaemonLogRecord) => void
  /** Kept log records per node (default 20 000; oldest dropped). */
  maxLogRecords?: number
  /** Called with every line a daemon writes (stdout and stderr, JSON or not: crashes print plain text). */
  onOutput?: (node: SpegelNode, line: string, stream: 'stdout' | 'stderr') => void
  /** Run each daemon as the container image does (bundle, ENTRYPOINT flags, image env, memory cgroup). */
  image?: ImageRuntimeOptions
  /** The containerd binary of every node (default testContainerd()'s: SPEGEL_TEST_CONTAINERD picks it). */
  containerdBinary?: string
  /** Configure every node's containerd as Talos does, with these machine files (StartContainerdOptions.talos). */
  talos?: { files: ReadonlyArray<{ path: string, content: string }> }
  /**
   * Run another implementation instead of ours: a Go Spegel binary, for side-by-side benchmarks (same flags, minus
   * those only spegel-ts has). With `image`, it runs in the same kind of memory cgroup.
   */
  goSpegelBinary?: string
  /**
   * How nodes find each other: `static` (default; node 1's router address) or `http` (every node serves /id on port
   * 5002 and bootstraps from node 1's, which Go Spegel also takes: its static peers need peer ids).
   */
  bootstrap?: 'static' | 'http'
  /**
   * Mutual TLS on the registry port: called with the node IPs once the namespaces exist; returns a directory holding
   * ca.crt, tls.crt and tls.key, given to every daemon and to `configuration` as `--registry-cert-dir` (mirror targets
   * become https://, and /readyz is checked against ca.crt).
   */
  registryTls?: (nodeIps: readonly string[]) => Promise<TestCertDir>
}

export interface ImageRuntimeOptions {
  /** Limit of each daemon's own memory cgroup, bytes: the chart's default `128Mi` is 134217728. */
  memoryLimitBytes: number
  /** RLIMIT_NOFILE of the daemon (up to the hard limit where it cannot be raised; see joinCgroupCommand). */
  nofile?: number
  /**
   * Give each node its own copy of the node binary (or of the Go Spegel binary), as each node of a cluster has its own image (default true). The
   * binary's pages in memory (about 55 MiB of the RSS) are then charged to that daemon's cgroup, as in a pod, instead of
   * to whichever process touched the shared file first (the test runner runs the same binary).
   */
  privateNodeBinary?: boolean
  /** A checkout (with node_modules) whose Dockerfile and sources make the image; default this working tree. */
  root?: string
  /** Node flags before the image's own, e.g. `--cpu-prof` for a profile (not part of the image). */
  extraNodeFlags?: readonly string[]
}

/** The daemon as the image ships it, built from a checkout (by default this working tree). */
export interface ImageApp {
  /** A private copy of the image's /app: package.json and dist/ (bundle modules and protos). */
  readonly appDir: string
  /** `<appDir>/dist/spegel.mjs`. */
  readonly bundle: string
  /** The node flags of the Dockerfile's ENTRYPOINT (between the node binary and the bundle). */
  readonly nodeFlags: readonly string[]
  /** The environment the image sets (the final stage's ENV, ARG defaults substituted) plus the base image's PATH. */
  readonly env: Readonly<Record<string, string>>
  /** `NODE [EXTRA] FLAGS BUNDLE ARGS…`; NODE (the image's /nodejs/bin/node) defaults to this process's Node 24. */
  argv: (args: readonly string[], node?: string, extraFlags?: readonly string[]) => string[]
  cleanup: () => Promise<void>
}

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))
/** PATH of the distroless base image (gcr.io/distroless/nodejs24-debian12). */
const baseImagePath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** The node flags and the environment of the image, read from the Dockerfile so tests follow it. */
export async function readImageRuntime (dockerfilePath = join(repoRoot, 'Dockerfile')): Promise<{ nodeFlags: string[], env: Record<string, string> }> {
  const text = await readFile(dockerfilePath, 'utf8')
  // Instructions with their continuation lines joined, comments dropped.
  const instructions: string[] = []
  let current = ''
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd()
    if (current === '' && (line.trimStart().startsWith('#') || line.trim() === '')) continue
    if (line.endsWith('\\')) { current += line.slice(0, -1) + ' '; continue }
    instructions.push(current + line)
    current = ''
  }
  if (current !== '') instructions.push(current)
  const lastFrom = instructions.findLastIndex((i) => /^FROM\s/i.test(i))
  const final = instructions.slice(lastFrom + 1)
  const entry = final.findLast((i) => /^ENTRYPOINT\s/i.test(i))
  const m = entry === undefined ? null : /^ENTRYPOINT\s+(\[.*\])\s*$/i.exec(entry)
  if (m === null) throw new Error(`${dockerfilePath}: the final stage has no exec-form ENTRYPOINT`)
  const argv = JSON.parse(m[1] as string) as string[]
  if (argv.length < 2 || !/\/node$/.test(argv[0] ?? '') || !/\/dist\/spegel\.mjs$/.test(argv.at(-1) ?? '')) {
    throw new Error(`${dockerfilePath}: ENTRYPOINT is not [node, ...flags, .../dist/spegel.mjs]: ${m[1]}`)
  }
  const args = new Map<string, string>()
  const env: Record<string, string> = { PATH: baseImagePath }
  for (const instruction of final) {
    const [, kind, rest] = /^(ARG|ENV)\s+(.*)$/i.exec(instruction) ?? []
    if (kind === undefined || rest === undefined) continue
    for (const token of rest.trim().split(/\s+/)) {
      const eq = token.indexOf('=')
      if (eq <= 0) continue
      const key = token.slice(0, eq)
      const value = token.slice(eq + 1).replace(/^"(.*)"$/, '$1').replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_all, name: string) => args.get(name) ?? env[name] ?? '')
      if (kind.toUpperCase() === 'ARG') args.set(key, value)
      else env[key] = value
    }
  }
  return { nodeFlags: argv.slice(1, -1), env }
}

/**
 * Builds the bundle (`npm run bundle`, as the image's build stage does) and copies what the image ships into a private
 * directory, so a rebuild of dist/ by anyone else while the daemons run cannot change the modules they load lazily.
 */
export async function prepareImageApp (root: string = repoRoot): Promise<ImageApp> {
  const { nodeFlags, env } = await readImageRuntime(join(root, 'Dockerfile'))
  await run('npm', ['run', 'bundle'], { cwd: root, timeoutMs: 180_000 })
  const tmp: TempDir = await makeTempDir('spegel-image-app')
  try {
    const appDir = join(tmp.path, 'app')
    const dist = join(root, 'dist')
    await mkdir(join(appDir, 'dist'), { recursive: true })
    await cp(join(root, 'package.json'), join(appDir, 'package.json'))
    // What the Dockerfile copies: dist/spegel.mjs, dist/spegel-* (the modules and kad-dht's prefix table),
    // dist/spegel.LEGAL.txt and dist/proto.
    for (const name of await readdir(dist)) {
      if (name === 'spegel.mjs' || name.startsWith('spegel-') || name === 'spegel.LEGAL.txt' || name === 'proto') {
        await cp(join(dist, name), join(appDir, 'dist', name), { recursive: true })
      }
    }
    const bundle = join(appDir, 'dist', 'spegel.mjs')
    await readFile(bundle)
    return {
      appDir,
      bundle,
      nodeFlags,
      env,
      argv: (args, node = process.execPath, extraFlags = []) => [node, ...extraFlags, ...nodeFlags, bundle, ...args],
      cleanup: tmp.cleanup,
    }
  } catch (err) {
    await tmp.cleanup()
    throw err
  }
}

/** Starts the cluster; on failure stops whatever was started and rethrows. */
export async function startSpegelCluster (options: StartSpegelClusterOptions = {}): Promise<SpegelCluster> {
  for (const tool of ['containerd', 'ctr', 'docker-registry', 'skopeo', 'ip', 'tc'] as const) requireKnownTool(tool)
  if (options.image !== undefined) requireMemoryCgroupV1()
  const count = options.nodes ?? 3
  const net = await createCluster({ nodes: count, prefix: options.prefix ?? 'spegel' })
  const nodes: NodeImpl[] = []
  const cgroups: MemoryCgroup[] = []
  let upstream: RegistryHandle | undefined
  let app: ImageApp | undefined
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await Promise.allSettled(nodes.map(async (n) => { await n.stopDaemon() }))
    await Promise.allSettled(nodes.map(async (n) => { await n.containerd.stop() }))
    await upstream?.stop().catch(() => {})
    await net.destroy()
    await app?.cleanup().catch(() => {})
    // Last, once every daemon has exited: a cgroup can only be removed empty. A leak is reported, not hidden.
    const removals = await Promise.allSettled(cgroups.map(async (c) => { await c.remove() }))
    const failed = removals.flatMap((r) => r.status === 'rejected' ? [r.reason as Error] : [])
    if (failed.length > 0) throw new AggregateError(failed, `cluster stopped, but ${failed.length} cgroup(s) could not be removed: ${failed.map((e) => e.message).join('; ')}`)
  }
  try {
    if (options.image !== undefined && options.goSpegelBinary === undefined) app = await prepareImageApp(options.image.root)
    const up = net.upstream
    if (up === undefined) throw new Error('the cluster has no upstream namespace')
    upstream = await startRegistry({ host: up.ip, port: registryPort, netns: up.netns })
    const upstreamRef = upstream
    const first = net.nodes[0]
    if (first === undefined) throw new Error('the cluster has no node')
    const bootstrap = `/ip4/${first.ip}/tcp/${routerPort}`
    const tls = options.registryTls !== undefined ? await options.registryTls(net.nodes.map((n) => n.ip)) : undefined
    const tlsArgs = tls !== undefined ? [`--registry-cert-dir=${tls.dir}`] : []
    for (const [i, member] of net.nodes.entries()) {
      const containerd = await startContainerd({ prefix: [requireKnownTool('ip'), 'netns', 'exec', member.netns], ...(options.containerdBinary !== undefined ? { binary: options.containerdBinary } : {}), ...(options.talos !== undefined ? { talos: options.talos } : {}) })
      let image: NodeInit['image']
      if (options.image !== undefined) {
        const cgroup = await createMemoryCgroup({ limitBytes: options.image.memoryLimitBytes, prefix: `${options.prefix ?? 'spegel'}-n${i + 1}` })
        cgroups.push(cgroup)
        let node: string | undefined
        if (options.image.privateNodeBinary ?? true) {
          // Where the image has it; inside the node's own directory, removed with it. (Go Spegel: its binary.)
          node = join(containerd.dir, 'nodejs', 'bin', options.goSpegelBinary !== undefined ? 'spegel' : 'node')
          await mkdir(join(containerd.dir, 'nodejs', 'bin'), { recursive: true })
          await cp(options.goSpegelBinary ?? process.execPath, node)
          // Out of the page cache again (written back, then dropped), so the pages the daemon runs are read in by it
          // and charged to its cgroup, as the binary of a freshly pulled image is.
          await run('sync', [node])
          await run('dd', [`if=${node}`, 'iflag=nocache', 'count=0', 'status=none'])
        }
        image = { app, cgroup, extraNodeFlags: options.image.extraNodeFlags ?? [], ...(node !== undefined ? { node } : {}), ...(options.image.nofile !== undefined ? { nofile: options.image.nofile } : {}) }
      }
      const node = new NodeImpl(i + 1, member, containerd, {
        logLevel: options.logLevel ?? 'INFO',
        bootstrapPeers: [bootstrap],
        bootstrap: options.bootstrap === 'http' ? { kind: 'http', url: `http://${first.ip}:${httpBootstrapPort}/id` } : { kind: 'static' },
        ...(options.goSpegelBinary !== undefined ? { goSpegelBinary: options.goSpegelBinary } : {}),
        // As the chart does: the registry gets the same mirrored registries as the configuration step.
        args: ['--mirrored-registries', upstreamRef.url, ...tlsArgs],
        daemonArgs: options.daemonArgs ?? [],
        ...(tls !== undefined ? { tls } : {}),
        maxLogRecords: options.maxLogRecords ?? 20_000,
        ...(options.onLog !== undefined ? { onLog: options.onLog } : {}),
        ...(options.onOutput !== undefined ? { onOutput: options.onOutput } : {}),
        ...(image !== undefined ? { image } : {}),
      })
      nodes.push(node)
      await runSpegel([
        'configuration',
        `--containerd-registry-config-path=${node.hostsDir}`,
        '--mirrored-registries', upstreamRef.url,
        '--mirror-targets', node.mirrorUrl,
        ...tlsArgs,
      ])
    }
    if (options.goSpegelBinary !== undefined) {
      // Go Spegel is ready only once it has a peer, so node 1 cannot become ready alone.
      await Promise.all(nodes.map(async (n) => { await n.startDaemon() }))
    } else {
      // Node 1 first: it is everyone's bootstrap peer and becomes ready alone.
      await nodes[0]!.startDaemon()
      await Promise.all(nodes.slice(1).map(async (n) => { await n.startDaemon() }))
    }
    const cluster: SpegelCluster = {
      net,
      upstream: upstreamRef,
      upstreamHost: upstreamRef.host,
      nodes,
      waitServable: async (node, repository, kind, reference, opts = {}) => {
        const url = `${node.mirrorUrl}/v2/${repository}/${kind}/${reference}?ns=${encodeURIComponent(upstreamRef.host)}`
        await waitFor(async () => {
          if (tls !== undefined) return await httpsStatus(url, { ca: tls.ca, client: tls, method: 'HEAD', timeoutMs: 5000 }) === 200
          const res = await fetch(url, { method: 'HEAD', signal: AbortSignal.timeout(5000) })
          return res.status === 200
        }, { timeoutMs: opts.timeoutMs ?? 30_000, intervalMs: 200, what: `${node.name} to serve ${repository} ${kind} ${reference}` })
      },
      stop,
      [Symbol.asyncDispose]: stop,
    }
    return cluster
  } catch (err) {
    await stop()
    throw err
  }
}

interface NodeInit {
  logLevel: string
  bootstrapPeers: readonly string[]
  bootstrap: { kind: 'static' } | { kind: 'http', url: string }
  goSpegelBinary?: string
  args: string[]
  /** The cluster's `daemonArgs`, until a startDaemon call replaces them. */
  daemonArgs: readonly string[]
  maxLogRecords: number
  onLog?: (node: SpegelNode, record: DaemonLogRecord) => void
  onOutput?: (node: SpegelNode, line: string, stream: 'stdout' | 'stderr') => void
  image?: { app: ImageApp | undefined, cgroup: MemoryCgroup, extraNodeFlags: readonly string[], node?: string, nofile?: number }
  tls?: TestCertDir
}

class NodeImpl implements SpegelNode {
  readonly index: number
  readonly name: string
  readonly net: NetnsMember
  readonly containerd: ContainerdInstance
  readonly hostsDir: string
  readonly mirrorUrl: string
  private readonly init: NodeInit
  private proc: ProcessHandle | undefined
  private id: string | undefined
  private records: DaemonLogRecord[] = []
  private daemonArgs: readonly string[]

  constructor (index: number, net: NetnsMember, containerd: ContainerdInstance, init: NodeInit) {
    this.index = index
    this.name = `node${index}`
    this.net = net
    this.containerd = containerd
    this.hostsDir = containerd.configPath
    this.mirrorUrl = `${init.tls !== undefined ? 'https' : 'http'}://${net.ip}:${registryPort}`
    this.init = init
    this.daemonArgs = init.daemonArgs
  }

  get netns (): string { return this.net.netns }
  get ip (): string { return this.net.ip }
  get daemon (): ProcessHandle | undefined { return this.proc }
  get peerId (): string | undefined { return this.id }
  get cgroup (): MemoryCgroup | undefined { return this.init.image?.cgroup }

  logs (): DaemonLogRecord[] {
    return [...this.records]
  }

  async ctr (args: readonly string[], options: { timeoutMs?: number, signal?: AbortSignal } = {}): Promise<string> {
    const res = await run('ctr', ['--address', this.containerd.socket, '-n', this.containerd.namespace, ...args], {
      netns: this.netns,
      timeoutMs: options.timeoutMs ?? 180_000,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    })
    return res.stdout
  }

  async pull (ref: string, options: PullOptions = {}): Promise<void> {
    const args = options.contentOnly === true ? ['content', 'fetch'] : ['images', 'pull']
    // Without hosts.toml, ctr talks to the upstream directly (plain HTTP, no mirror).
    args.push(...(options.mirrors ?? true) ? ['--hosts-dir', this.hostsDir] : ['--plain-http'])
    if (options.allPlatforms === true) args.push('--all-platforms')
    if (options.platform !== undefined) args.push('--platform', options.platform)
    args.push(ref)
    await this.ctr(args, { ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}), ...(options.signal !== undefined ? { signal: options.signal } : {}) })
  }

  async contentDigests (): Promise<Set<string>> {
    const out = await this.ctr(['content', 'ls', '-q'])
    return new Set(out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('sha256:')))
  }

  async imageDigest (name: string): Promise<string | undefined> {
    const out = await this.ctr(['images', 'ls'])
    for (const line of out.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols[0] === name) return cols[2]
    }
    return undefined
  }

  async forget (images: readonly string[], digests: readonly string[]): Promise<void> {
    if (images.length > 0) await run('ctr', ['--address', this.containerd.socket, '-n', this.containerd.namespace, 'images', 'rm', '--sync', ...images], { allowNonZero: true, timeoutMs: 120_000 })
    if (digests.length > 0) await run('ctr', ['--address', this.containerd.socket, '-n', this.containerd.namespace, 'content', 'rm', ...digests], { allowNonZero: true, timeoutMs: 120_000 })
  }

  get routerAddr (): string { return `/ip4/${this.ip}/tcp/${routerPort}` }

  async startDaemon (options: { bootstrapPeers?: readonly string[], daemonArgs?: readonly string[], expectReady?: boolean } = {}): Promise<void> {
    if (this.proc !== undefined && this.proc.exitStatus === undefined) throw new Error(`${this.name}: daemon already running`)
    if (options.daemonArgs !== undefined) this.daemonArgs = [...options.daemonArgs]
    const dataDir = join(this.containerd.dir, 'spegel-data')
    await mkdir(dataDir, { recursive: true })
    const go = this.init.goSpegelBinary
    const bootstrap = this.init.bootstrap
    const args = [
      'registry',
      `--log-level=${this.init.logLevel}`,
      `--registry-addr=${this.ip}:${registryPort}`,
      `--metrics-addr=${this.ip}:${metricsPort}`,
      `--router-addr=${this.ip}:${routerPort}`,
      `--containerd-sock=${this.containerd.socket}`,
      `--containerd-namespace=${this.containerd.namespace}`,
      `--containerd-content-path=${this.containerd.contentPath}`,
      // Ours only (for the doctor); Go Spegel's registry command refuses it.
      ...go === undefined ? [`--containerd-registry-config-path=${this.hostsDir}`] : [],
      `--data-dir=${dataDir}`,
      ...bootstrap.kind === 'http'
        ? ['--bootstrap-kind=http', `--http-bootstrap-addr=${this.ip}:${httpBootstrapPort}`, `--http-bootstrap-url=${bootstrap.url}`]
        : ['--bootstrap-kind=static', ...(options.bootstrapPeers ?? this.init.bootstrapPeers).map((p) => `--static-bootstrap-peers=${p}`)],
      ...this.init.args,
      ...this.daemonArgs,
    ]
    const image = this.init.image
    // As the image: `node FLAGS /app/dist/spegel.mjs registry …` with only the image's environment, in the cgroup.
    const app = image?.app
    const direct = go !== undefined ? [image?.node ?? go, ...args] : app === undefined ? [process.execPath, cliPath, ...args] : app.argv(args, image?.node, image?.extraNodeFlags)
    const [cmd, ...argv] = image === undefined
      ? direct
      : joinCgroupCommand(image.cgroup, direct, { env: app !== undefined ? { ...app.env } : { PATH: process.env.PATH ?? '' }, ...(image.nofile !== undefined ? { nofile: image.nofile } : {}) })
    const proc = await startProcess(cmd as string, argv, {
      netns: this.netns,
      name: `spegel-${this.name}`,
      onLine: (line, stream) => {
        this.init.onOutput?.(this, line, stream)
        this.onLine(line)
      },
    })
    this.proc = proc
    try {
      await waitFor(async () => {
        if (proc.exitStatus !== undefined) throw new Error(`${this.name}: spegel exited early`)
        const tls = this.init.tls
        let status: number
        if (tls !== undefined) {
          status = await httpsStatus(`${this.mirrorUrl}/readyz`, { ca: tls.ca, timeoutMs: 1000 })
        } else {
          const res = await fetch(`${this.mirrorUrl}/readyz`, { signal: AbortSignal.timeout(1000) })
          await res.body?.cancel()
          status = res.status
        }
        // Go Spegel logs no peer id line. A node expected not to become ready (an outsider that cannot join) is up once
        // its registry answers and its router has started.
        if (options.expectReady === false) return status !== 0 && this.id !== undefined
        return status === 200 && (this.id !== undefined || go !== undefined)
      }, { timeoutMs: 30_000, intervalMs: 100, what: `${this.name} spegel /readyz`, context: () => proc.output() })
      if (image !== undefined) {
        // The wrapper execs in place, so this PID is node's; it must be charged to the node's cgroup.
        const joined = await memoryCgroupOf(proc.pid)
        if (joined !== `/${image.cgroup.name}`) throw new Error(`${this.name}: the daemon (pid ${proc.pid}) is in memory cgroup ${String(joined)}, not /${image.cgroup.name}`)
      }
    } catch (err) {
      await proc.stop('SIGKILL')
      throw err
    }
  }

  async stopDaemon (): Promise<void> {
    await this.proc?.stop('SIGTERM', 10_000)
  }

  async killDaemon (): Promise<void> {
    await this.proc?.stop('SIGKILL')
  }

  private onLine (line: string): void {
    if (!line.startsWith('{')) return
    let record: DaemonLogRecord
    try {
      record = JSON.parse(line) as DaemonLogRecord
    } catch {
      return
    }
    if (record.msg === 'running' && typeof record.peerId === 'string') this.id = record.peerId
    this.records.push(record)
    if (this.records.length > this.init.maxLogRecords) this.records.splice(0, this.records.length - this.init.maxLogRecords)
    this.init.onLog?.(this, record)
  }
}
