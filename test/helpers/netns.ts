// Network namespaces for multi-node tests, the demo and benchmarks: one "switch" namespace holding a bridge, one
// namespace per node and one for the upstream registry, each joined to the bridge by a veth pair and given an
// address in a private /24 that exists only inside the namespaces made here (no default route anywhere). Optionally
// one veth reaches the namespace this process runs in, so the test process can talk to the nodes directly.
//
// Every name carries a prefix, this process's PID and a random suffix; only namespaces and links created here are
// ever deleted: on destroy(), and as a last resort from a process 'exit' hook.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { run } from './process.ts'
import { MissingToolError, requireKnownTool, requireRoot as requireRootUser, requireTool as requireToolOnPath } from './tools.ts'

export class NetnsError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'NetnsError'
  }
}

/** Throws MissingToolError unless this process runs as root (network namespaces need CAP_NET_ADMIN). */
export function requireRoot (): void {
  requireRootUser()
}

/** The absolute path of `name`; throws MissingToolError("NAME is not installed: HINT") when it is missing. */
export function requireTool (name: string, installHint: string): string {
  return requireToolOnPath(name, installHint)
}

/** One end of the cluster network: a namespace with `eth0` on the bridge. */
export interface NetnsMember {
  /** Namespace name (for `ip netns exec`, StartProcessOptions.netns, …). */
  netns: string
  ip: string
  /** The interface inside the namespace. */
  iface: string
  /** Its peer on the bridge, inside the switch namespace. */
  bridgePort: string
}

export interface CreateClusterOptions {
  /** Number of node namespaces (≥ 1). */
  nodes: number
  /** Start of every name (default `spegel`); letters, digits and dashes. */
  prefix?: string
  /** Create the upstream namespace (default true). */
  upstream?: boolean
  /**
   * Connect this process's own network namespace to the bridge with one veth (default true). The host end gets
   * `<subnet>.254/24`: a connected route for the private /24 only, nothing else changes.
   */
  hostLink?: boolean
}

export interface NetnsCluster {
  /** Unique per run: `<prefix>-<pid>-<random>`. */
  readonly id: string
  /** e.g. `10.213.57.0/24`. */
  readonly subnet: string
  readonly switchNetns: string
  /** Nodes 1..n, in order (node i has `<subnet>.i`). */
  readonly nodes: readonly NetnsMember[]
  /** The upstream registry's namespace (`<subnet>.100`), undefined with `upstream: false`. */
  readonly upstream: NetnsMember | undefined
  /** This process's address on the bridge, undefined without a host link. */
  readonly hostIp: string | undefined
  /** Name of the host-side interface of the host link. */
  readonly hostIface: string | undefined
  /** Limits what `member` sends (egress of its eth0) with tc tbf, e.g. `rate: '100mbit'`. */
  shape: (member: NetnsMember, options: ShapeOptions) => Promise<void>
  /** Removes a shaping qdisc added by shape(). */
  unshape: (member: NetnsMember) => Promise<void>
  /**
   * Makes `member` look like a node that died or was cut off: every IPv4 and IPv6 packet sent to it is dropped at the
   * switch, so a connection attempt gets no answer at all (neither accepted nor refused). ARP still passes, so a
   * sender keeps its neighbour entry and sees pure silence, never a quick "host unreachable". Undo with unblackhole().
   */
  blackhole: (member: NetnsMember, options?: BlackholeOptions) => Promise<void>
  /** Removes a blackhole; does nothing when there is none. */
  unblackhole: (member: NetnsMember) => Promise<void>
  /** Packets a blackhole of `member` has dropped so far. */
  blackholeDrops: (member: NetnsMember) => Promise<BlackholeDrops>
  /** Deletes every namespace and link of this cluster. Idempotent. */
  destroy: () => Promise<void>
  [Symbol.asyncDispose]: () => Promise<void>
}

export interface ShapeOptions {
  /** tc rate, e.g. `100mbit`. */
  rate: string
  /** Bucket size (default 256kb: larger than a GSO super-packet, so veth offloads do not stall tbf). */
  burst?: string
  /** Longest queueing before drop (default 100ms). */
  latency?: string
}

export interface BlackholeOptions {
  /** Count TCP SYNs to this port apart from the other drops (connection attempts, see BlackholeDrops.syn). */
  countSynToPort?: number
}

export interface BlackholeDrops {
  /** TCP SYNs to `countSynToPort` (a first SYN and its retransmissions), 0 without that option. */
  syn: number
  /** Every other dropped packet. */
  other: number
}

/** Namespaces and links of every live cluster of this process, for the exit hook. */
const liveClusters = new Map<string, { namespaces: string[], hostIface: string | undefined }>()
let exitHookInstalled = false

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // Last resort when a run ends without destroy(): synchronous, since 'exit' handlers cannot await.
  process.on('exit', () => {
    for (const entry of liveClusters.values()) deleteSync(entry.namespaces, entry.hostIface)
    liveClusters.clear()
  })
}

function deleteSync (namespaces: string[], hostIface: string | undefined): void {
  const ip = requireKnownTool('ip')
  if (hostIface !== undefined) {
    try { execFileSync(ip, ['link', 'del', hostIface], { stdio: 'ignore', timeout: 10_000 }) } catch {}
  }
  for (const ns of namespaces) {
    try { execFileSync(ip, ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 }) } catch {}
  }
}

/** Checks root and iproute2, with messages saying how to fix each. */
export function requireNetnsSupport (): void {
  requireRoot()
  requireTool('ip', 'apt-get install -y iproute2')
  requireTool('tc', 'apt-get install -y iproute2')
}

/** A third octet for 10.213.X.0/24 that no address or route of this namespace uses yet. */
async function pickSubnet (): Promise<number> {
  const ip = requireKnownTool('ip')
  const used = (await run(ip, ['-4', 'route', 'show', 'table', 'all'])).stdout + (await run(ip, ['-4', 'addr', 'show'])).stdout
  const start = (process.pid + randomBytes(1)[0]!) % 250
  for (let i = 0; i < 250; i++) {
    const octet = 1 + ((start + i) % 250)
    if (!used.includes(`10.213.${octet}.`) && !/\b10\.213\.0\.0\/16\b|\b10\.0\.0\.0\/8\b/.test(used)) return octet
  }
  throw new NetnsError('no free 10.213.X.0/24 subnet: every one is in use on this machine')
}

/** Creates the namespaces, bridge and links; on any failure deletes what was made and rethrows. */
export async function createCluster (options: CreateClusterOptions): Promise<NetnsCluster> {
  requireNetnsSupport()
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > 99) throw new NetnsError(`nodes must be 1..99, got ${options.nodes}`)
  const prefix = options.prefix ?? 'spegel'
  if (!/^[a-zA-Z0-9-]{1,20}$/.test(prefix)) throw new NetnsError(`invalid prefix ${JSON.stringify(prefix)}`)
  const ipBin = requireKnownTool('ip')
  const suffix = randomBytes(3).toString('hex')
  const id = `${prefix}-${process.pid}-${suffix}`
  const octet = await pickSubnet()
  const base = `10.213.${octet}`
  const switchNetns = `${id}-sw`
  const withHost = options.hostLink ?? true
  // Interface names are limited to 15 bytes and live in this namespace: keep it short and unique.
  const hostIface = withHost ? `spg${suffix}${(process.pid % 10000).toString(36)}`.slice(0, 15) : undefined
  const namespaces: string[] = []
  installExitHook()
  liveClusters.set(id, { namespaces, hostIface: undefined })

  const ip = async (...args: string[]): Promise<void> => {
    await run(ipBin, args, { timeoutMs: 20_000 })
  }
  const addNetns = async (name: string): Promise<void> => {
    await ip('netns', 'add', name)
    namespaces.push(name)
    await ip('-n', name, 'link', 'set', 'lo', 'up')
  }
  const join = async (netns: string, address: string, port: string): Promise<NetnsMember> => {
    await addNetns(netns)
    await ip('-n', switchNetns, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns)
    await ip('-n', switchNetns, 'link', 'set', port, 'master', 'br0')
    await ip('-n', switchNetns, 'link', 'set', port, 'up')
    await ip('-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0')
    await ip('-n', netns, 'link', 'set', 'eth0', 'up')
    return { netns, ip: address, iface: 'eth0', bridgePort: port }
  }

  let destroyed = false
  const destroy = async (): Promise<void> => {
    if (destroyed) return
    destroyed = true
    if (hostIface !== undefined) await run(ipBin, ['link', 'del', hostIface], { allowNonZero: true, timeoutMs: 20_000 }).catch(() => {})
    // Deleting a namespace removes its veth ends, and with them their peers.
    for (const ns of [...namespaces].reverse()) {
      await run(ipBin, ['netns', 'del', ns], { allowNonZero: true, timeoutMs: 20_000 }).catch(() => {})
    }
    liveClusters.delete(id)
  }

  try {
    await addNetns(switchNetns)
    await ip('-n', switchNetns, 'link', 'add', 'br0', 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0')
    await ip('-n', switchNetns, 'link', 'set', 'br0', 'up')
    const nodes: NetnsMember[] = []
    for (let i = 1; i <= options.nodes; i++) nodes.push(await join(`${id}-n${i}`, `${base}.${i}`, `vn${i}`))
    const upstream = (options.upstream ?? true) ? await join(`${id}-up`, `${base}.100`, 'vup') : undefined
    let hostIp: string | undefined
    if (hostIface !== undefined) {
      // `netns <pid>` names the namespace of that process: our own, wherever this runs.
      await ip('-n', switchNetns, 'link', 'add', 'vhost', 'type', 'veth', 'peer', 'name', hostIface, 'netns', String(process.pid))
      liveClusters.set(id, { namespaces, hostIface })
      await ip('-n', switchNetns, 'link', 'set', 'vhost', 'master', 'br0')
      await ip('-n', switchNetns, 'link', 'set', 'vhost', 'up')
      hostIp = `${base}.254`
      await ip('addr', 'add', `${hostIp}/24`, 'dev', hostIface)
      await ip('link', 'set', hostIface, 'up')
    }
    const tcBin = requireKnownTool('tc')
    const cluster: NetnsCluster = {
      id,
      subnet: `${base}.0/24`,
      switchNetns,
      nodes,
      upstream,
      hostIp,
      hostIface,
      shape: async (member, shape) => {
        await run(tcBin, ['-n', member.netns, 'qdisc', 'replace', 'dev', member.iface, 'root', 'tbf',
          'rate', shape.rate, 'burst', shape.burst ?? '256kb', 'latency', shape.latency ?? '100ms'])
      },
      unshape: async (member) => {
        await run(tcBin, ['-n', member.netns, 'qdisc', 'del', 'dev', member.iface, 'root'], { allowNonZero: true })
      },
      // On the egress of the member's bridge port rather than the ingress of its eth0: this kernel has no tc gact or
      // police action (`action drop` fails with "Failed to load TC action module"), so the drop is a zero-length
      // pfifo that u32 classifies packets into (classification needs no action module). Class 1:2, the default,
      // lets ARP through; 1:1 drops IP; 1:3 drops the counted SYNs.
      blackhole: async (member, opts = {}) => {
        const dev = member.bridgePort
        const sw = async (...args: string[]): Promise<void> => { await run(tcBin, ['-n', switchNetns, ...args]) }
        try {
          await sw('qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '2')
          for (const classid of ['1:1', '1:2', '1:3']) {
            await sw('class', 'add', 'dev', dev, 'parent', '1:', 'classid', classid, 'htb', 'rate', '10gbit', 'quantum', '60000')
          }
          await sw('qdisc', 'add', 'dev', dev, 'parent', '1:1', 'handle', '11:', 'pfifo', 'limit', '0')
          await sw('qdisc', 'add', 'dev', dev, 'parent', '1:3', 'handle', '13:', 'pfifo', 'limit', '0')
          if (opts.countSynToPort !== undefined) {
            // Offsets assume an IPv4 header without options (byte 33 = TCP flags), as the kernel sends.
            await sw('filter', 'add', 'dev', dev, 'parent', '1:', 'prio', '1', 'protocol', 'ip', 'u32',
              'match', 'ip', 'protocol', '6', '0xff', 'match', 'ip', 'dport', String(opts.countSynToPort), '0xffff',
              'match', 'u8', '0x02', '0x02', 'at', '33', 'flowid', '1:3')
          }
          await sw('filter', 'add', 'dev', dev, 'parent', '1:', 'prio', '2', 'protocol', 'ip', 'u32', 'match', 'u32', '0', '0', 'flowid', '1:1')
          await sw('filter', 'add', 'dev', dev, 'parent', '1:', 'prio', '3', 'protocol', 'ipv6', 'u32', 'match', 'u32', '0', '0', 'flowid', '1:1')
        } catch (err) {
          await run(tcBin, ['-n', switchNetns, 'qdisc', 'del', 'dev', dev, 'root'], { allowNonZero: true }).catch(() => {})
          throw err
        }
      },
      unblackhole: async (member) => {
        await run(tcBin, ['-n', switchNetns, 'qdisc', 'del', 'dev', member.bridgePort, 'root'], { allowNonZero: true })
      },
      blackholeDrops: async (member) => {
        const { stdout } = await run(tcBin, ['-n', switchNetns, '-s', '-j', 'qdisc', 'show', 'dev', member.bridgePort])
        const qdiscs = JSON.parse(stdout) as Array<{ handle?: string, drops?: number }>
        const drops = (handle: string): number => qdiscs.find((q) => q.handle === handle)?.drops ?? 0
        return { syn: drops('13:'), other: drops('11:') }
      },
      destroy,
      [Symbol.asyncDispose]: destroy,
    }
    return cluster
  } catch (err) {
    await destroy()
    if (err instanceof MissingToolError) throw err
    throw new NetnsError(`cannot create network namespaces for ${id}: ${err instanceof Error ? err.message : String(err)}`)
  }
}
