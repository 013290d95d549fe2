import { RouterClosedError } from './errors.ts'
import type { LookupOptions, Peer, PeerInfo, Router, RouterIntrospection, RouterOptions, RouterStatus } from './types.ts'

/**
 * The shared state of a group of MemoryRouters: which router provides which key. Routers that share one
 * network see each other's advertisements immediately, like a DHT that has converged.
 */
export class MemoryNetwork {
  readonly providers = new Map<string, Map<string, Peer>>()
  readonly routers = new Map<string, MemoryRouter>()
}

export interface MemoryRouterOptions {
  /** Unique id within the network. */
  id: string
  /** IP addresses reported to other routers for this node. */
  addresses?: string[]
  /** Initial readiness (default true). */
  ready?: boolean
}

/** In-memory Router for tests: settable readiness, advertise/withdraw add/remove this router as provider. */
export class MemoryRouter implements Router, RouterIntrospection {
  readonly peerId: string
  readonly addresses: string[]
  private readonly network: MemoryNetwork
  private isReady: boolean
  private closed = false

  constructor (network: MemoryNetwork, init: MemoryRouterOptions) {
    if (network.routers.has(init.id)) throw new Error(`duplicate memory router id ${init.id}`)
    this.network = network
    this.peerId = init.id
    this.addresses = [...(init.addresses ?? [])]
    this.isReady = init.ready ?? true
    network.routers.set(init.id, this)
  }

  ready (): boolean {
    return this.isReady && !this.closed
  }

  setReady (ready: boolean): void {
    this.isReady = ready
  }

  status (): RouterStatus {
    const others = this.closed ? 0 : this.network.routers.size - 1
    return { ready: this.ready(), routingTableSize: others, alone: !this.closed && others === 0 }
  }

  multiaddrs (): string[] {
    return this.addresses.map((ip) => `/${ip.includes(':') ? 'ip6' : 'ip4'}/${ip}/p2p/${this.peerId}`)
  }

  async * lookup (key: string, options: LookupOptions): AsyncIterable<Peer> {
    if (this.closed) throw new RouterClosedError()
    const signal = options.signal
    const aborted = (): boolean => signal?.aborted === true
    if (options.count < 1 || aborted()) return
    // Snapshot, so a concurrent withdraw does not change what this lookup yields.
    const found = [...(this.network.providers.get(key)?.values() ?? [])].filter((p) => p.id !== this.peerId)
    let yielded = 0
    for (const peer of found) {
      if (aborted()) return
      yield { id: peer.id, addresses: [...peer.addresses] }
      if (++yielded >= options.count) return
    }
  }

  async advertise (keys: string[], options?: RouterOptions): Promise<void> {
    if (this.closed) throw new RouterClosedError()
    options?.signal?.throwIfAborted()
    for (const key of keys) {
      let peers = this.network.providers.get(key)
      if (peers === undefined) {
        peers = new Map()
        this.network.providers.set(key, peers)
      }
      peers.set(this.peerId, { id: this.peerId, addresses: this.addresses })
    }
  }

  async withdraw (keys: string[], options?: RouterOptions): Promise<void> {
    if (this.closed) throw new RouterClosedError()
    options?.signal?.throwIfAborted()
    for (const key of keys) {
      const peers = this.network.providers.get(key)
      peers?.delete(this.peerId)
      if (peers?.size === 0) this.network.providers.delete(key)
    }
  }

  peers (): PeerInfo[] {
    if (this.closed) return []
    return [...this.network.routers.values()]
      .filter((r) => r !== this)
      .map((r) => ({ id: r.peerId, addresses: r.addresses.map((ip) => `/${ip.includes(':') ? 'ip6' : 'ip4'}/${ip}`) }))
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const [key, peers] of this.network.providers) {
      peers.delete(this.peerId)
      if (peers.size === 0) this.network.providers.delete(key)
    }
    this.network.routers.delete(this.peerId)
  }
}
