// Two full daemons on one host, each with its own real containerd: A on 127.0.0.2 holds the images, B on 127.0.0.3
// holds nothing and bootstraps from A, so whatever B serves comes from A through the DHT. Both listen on one registry
// port, as peers require (a peer is asked on the port its asker listens on). No network namespaces needed; the
// multi-node cluster (./spegel-cluster.ts) covers real interfaces.
import { join } from 'node:path'
import { startContainerd, writeOciArchive, type ContainerdInstance, type TestImage } from './containerd.ts'
import { freePorts } from './ports.ts'
import { startSpegelRegistry, type SpegelRegistry } from './spegel.ts'
import { requireKnownTool } from './tools.ts'

export const pairHostA = '127.0.0.2'
export const pairHostB = '127.0.0.3'

export interface SpegelPairOptions {
  /** Imported into A's containerd (`ctr images import --no-unpack`) before the daemons start. */
  images: readonly TestImage[]
  /** More `ctr images import` flags, e.g. `--all-platforms`. */
  importArgs?: readonly string[]
  /** More `spegel registry` flags for A, given A's containerd. */
  argsA?: (a: ContainerdInstance) => readonly string[]
  /** More `spegel registry` flags for B, given B's containerd. */
  argsB?: (b: ContainerdInstance) => readonly string[]
  /** B's `--mirror-resolve-timeout`: how long a miss waits for the DHT (default 2s, room for a busy machine). */
  resolveTimeout?: string
  /** Runs once the containerds and the ports exist, before either daemon starts (e.g. to write B's hosts.toml). */
  beforeStart?: (pair: { a: ContainerdInstance, b: ContainerdInstance, urlA: string, urlB: string }) => Promise<void>
}

export interface SpegelPair {
  a: ContainerdInstance
  b: ContainerdInstance
  spegelA: SpegelRegistry
  spegelB: SpegelRegistry
  registryPort: number
  routerPort: number
  /** Stops both daemons, then both containerds (their temp dirs go with them). Idempotent. */
  stop: () => Promise<void>
}

/** Starts the pair; on failure stops whatever was started and rethrows. */
export async function startSpegelPair (options: SpegelPairOptions): Promise<SpegelPair> {
  requireKnownTool('containerd')
  const daemons: SpegelRegistry[] = []
  const containerds: ContainerdInstance[] = []
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await Promise.allSettled(daemons.map(async (d) => { await d.stop() }))
    await Promise.allSettled(containerds.map(async (c) => { await c.stop() }))
  }
  try {
    const started = await Promise.allSettled([startContainerd(), startContainerd()])
    for (const s of started) if (s.status === 'fulfilled') containerds.push(s.value)
    for (const s of started) if (s.status === 'rejected') throw s.reason
    const [a, b] = containerds as [ContainerdInstance, ContainerdInstance]
    const archive = join(a.dir, 'images.tar')
    await writeOciArchive(archive, [...options.images])
    await a.ctr(['images', 'import', '--no-unpack', ...options.importArgs ?? [], archive])
    const [registryPort, routerPort] = await freePorts(2) as [number, number]
    await options.beforeStart?.({ a, b, urlA: `http://${pairHostA}:${registryPort}`, urlB: `http://${pairHostB}:${registryPort}` })
    const env = { SPEGEL_ALLOW_LOOPBACK: 'true' }
    const spegelA = await startSpegelRegistry({
      host: pairHostA, registryPort, routerPort, containerdSocket: a.socket, contentPath: a.contentPath, env,
      args: ['--bootstrap-kind=static', ...options.argsA?.(a) ?? []],
    })
    daemons.push(spegelA)
    const spegelB = await startSpegelRegistry({
      host: pairHostB, registryPort, routerPort, containerdSocket: b.socket, contentPath: b.contentPath, env,
      args: ['--bootstrap-kind=static', '--static-bootstrap-peers', `/ip4/${pairHostA}/tcp/${routerPort}`,
        `--mirror-resolve-timeout=${options.resolveTimeout ?? '2s'}`, ...options.argsB?.(b) ?? []],
    })
    daemons.push(spegelB)
    return { a, b, spegelA, spegelB, registryPort, routerPort, stop }
  } catch (err) {
    await stop()
    throw err
  }
}
