// The Go libp2p DHT peer (test/go/dhtpeer, built into .tools/bin/dhtpeer by .ci/setup.d/20-go-dht-peer.sh): a node
// of go-libp2p-kad-dht with Spegel's settings, driven through its HTTP control API.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { startProcess, type ProcessHandle } from './process.ts'
import { waitFor } from './wait.ts'
import { MissingToolError } from './tools.ts'

export const goDhtPeerPath = fileURLToPath(new URL('../../.tools/bin/dhtpeer', import.meta.url))

/** A peer as the Go node reports it (routing-table entry or provider). */
export interface GoPeerInfo {
  id: string
  /** Multiaddrs without `/p2p/`. */
  addrs: string[]
  /** The unique IPs of `addrs`. */
  ips: string[]
}

export interface StartGoDhtPeerOptions {
  /** Network namespace to run in (default: this process's, e.g. for loopback addresses). */
  netns?: string
  /** Router listen address `IP:PORT` (Spegel's --router-addr). */
  listen: string
  /** Control API address `IP:PORT`, reachable from this process. */
  control: string
  /** Bootstrap multiaddrs, with or without `/p2p/<id>`. */
  bootstrap?: readonly string[]
  /** Keys to provide from the start. */
  provide?: readonly string[]
  /** Swarm key file of a private network (-psk-file; spegel-ts's --router-psk-file). */
  pskFile?: string
  name?: string
  /** Also append the peer's output to this file. */
  logFile?: string
  /** Merged over this process's environment (e.g. GOLOG_LOG_LEVEL for go-libp2p's own logs on stderr). */
  env?: Record<string, string>
}

export interface GoDhtPeer {
  readonly id: string
  /** Full multiaddrs (`/ip4/…/tcp/…/p2p/…`). */
  readonly addrs: readonly string[]
  readonly process: ProcessHandle
  /** JSON log lines of the peer so far. */
  logs: () => Array<Record<string, unknown>>
  /** Spegel's Ready(): routing table not empty and the provider online. */
  ready: () => Promise<boolean>
  waitReady: (timeoutMs?: number) => Promise<void>
  /** Routing-table peers. */
  peers: () => Promise<GoPeerInfo[]>
  /**
   * Spegel's Advertise(keys). With `localOnly`, only its first step: a provider record in this node's own store, never
   * published, so other nodes learn of it only by asking this node.
   */
  provide: (keys: readonly string[], options?: { localOnly?: boolean }) => Promise<void>
  /** kad-dht FindProvidersAsync(key, count), self skipped; count 0 runs the whole query. */
  findProviders: (key: string, options?: { count?: number, timeoutMs?: number }) => Promise<GoPeerInfo[]>
  /** One GET_PROVIDERS request to `peerId`, and its answer as sent on the wire. */
  getProviders: (key: string, peerId: string) => Promise<{ providers: GoPeerInfo[], closer: GoPeerInfo[] }>
  /** The provider records this node stores for `key` (its own included). */
  localProviders: (key: string) => Promise<GoPeerInfo[]>
  /** SIGTERM by PID (SIGKILL after 5 s). */
  stop: () => Promise<void>
}

/** Throws MissingToolError when the binary has not been built. */
export function requireGoDhtPeer (): string {
  if (!existsSync(goDhtPeerPath)) throw new MissingToolError(`${goDhtPeerPath} is not built: bash .ci/setup.d/20-go-dht-peer.sh`)
  return goDhtPeerPath
}

/** Starts the Go peer and waits for its control API; it then bootstraps in the background (see waitReady). */
export async function startGoDhtPeer (options: StartGoDhtPeerOptions): Promise<GoDhtPeer> {
  const binary = requireGoDhtPeer()
  const args = ['-listen', options.listen, '-control', options.control]
  for (const b of options.bootstrap ?? []) args.push('-bootstrap', b)
  for (const k of options.provide ?? []) args.push('-provide', k)
  if (options.pskFile !== undefined) args.push('-psk-file', options.pskFile)
  const records: Array<Record<string, unknown>> = []
  const proc = await startProcess(binary, args, {
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
    name: options.name ?? 'dhtpeer',
    ...(options.logFile !== undefined ? { logFile: options.logFile } : {}),
    ...(options.env !== undefined ? { env: options.env } : {}),
    onLine: (line) => {
      if (!line.startsWith('{')) return
      try { records.push(JSON.parse(line) as Record<string, unknown>) } catch {}
    },
  })
  const base = `http://${options.control}`
  const json = async <T>(path: string, init?: RequestInit & { timeoutMs?: number }): Promise<{ status: number, body: T }> => {
    const res = await fetch(base + path, { ...init, signal: AbortSignal.timeout(init?.timeoutMs ?? 15_000) })
    const text = await res.text()
    return { status: res.status, body: JSON.parse(text) as T }
  }
  const lines = async (path: string, timeoutMs = 15_000): Promise<GoPeerInfo[]> => {
    const res = await fetch(base + path, { signal: AbortSignal.timeout(timeoutMs) })
    const text = await res.text()
    if (res.status !== 200) throw new Error(`dhtpeer ${path}: ${res.status} ${text}`)
    return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as GoPeerInfo)
  }
  try {
    const id = await waitFor(async () => {
      if (proc.exitStatus !== undefined) throw new Error('dhtpeer exited')
      return (await json<{ id: string, addrs: string[] }>('/id', { timeoutMs: 1000 })).body
    }, { timeoutMs: 15_000, intervalMs: 100, what: 'dhtpeer control API', context: () => proc.output() })
    const peer: GoDhtPeer = {
      id: id.id,
      addrs: id.addrs,
      process: proc,
      logs: () => [...records],
      ready: async () => (await json<{ ready: boolean }>('/ready')).body.ready,
      waitReady: async (timeoutMs = 30_000) => {
        await waitFor(async () => await peer.ready(), { timeoutMs, intervalMs: 100, what: 'dhtpeer to be ready', context: () => proc.output() })
      },
      peers: async () => await lines('/peers'),
      provide: async (keys, opts = {}) => {
        const q = new URLSearchParams(keys.map((k): [string, string] => ['key', k]))
        if (opts.localOnly === true) q.set('local', '1')
        const { status, body } = await json<unknown>(`/provide?${q.toString()}`, { method: 'POST' })
        if (status !== 200) throw new Error(`dhtpeer provide: ${status} ${JSON.stringify(body)}`)
      },
      findProviders: async (key, opts = {}) => {
        const timeoutMs = opts.timeoutMs ?? 10_000
        const q = new URLSearchParams({ key, count: String(opts.count ?? 0), timeout: `${timeoutMs}ms` })
        return await lines(`/findproviders?${q.toString()}`, timeoutMs + 5_000)
      },
      getProviders: async (key, peerId) => {
        const { status, body } = await json<{ providers: GoPeerInfo[], closer: GoPeerInfo[], error?: string }>(`/getproviders?${new URLSearchParams({ key, peer: peerId }).toString()}`)
        if (status !== 200) throw new Error(`dhtpeer getproviders from ${peerId}: ${status} ${body.error ?? ''}`)
        return { providers: body.providers, closer: body.closer }
      },
      localProviders: async (key) => await lines(`/localproviders?${new URLSearchParams({ key }).toString()}`),
      stop: async () => { await proc.stop('SIGTERM', 5_000) },
    }
    return peer
  } catch (err) {
    await proc.stop('SIGKILL')
    throw err
  }
}
