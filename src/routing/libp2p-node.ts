import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Identify } from '@libp2p/identify'
import { kadDHT } from '@libp2p/kad-dht'
import type { KadDHT } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import type { Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import type { Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import type { ComponentLogger, Libp2p, Logger as Libp2pLogger, PeerId, PeerInfo as Libp2pPeerInfo, PrivateKey } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import { networkInterfaces } from 'node:os'
import type { Logger } from '../log/index.ts'
import { parseHostPort } from '../util/addr.ts'
import { isShareableIp, multiaddrIp, routerListenAddrs } from './addr.ts'
import type { Bootstrapper } from './bootstrap.ts'
import {
  connectionPingIntervalMs, defaultRouterAddr, dhtMaxInboundStreams, dhtProtocol, kBucketSize, providerTtlMs, queryAlpha,
  reprovideIntervalMs,
} from './constants.ts'
import { loadIdentity } from './identity.ts'
import { memoizePeerStoreMerges } from './peer-store-memo.ts'
import { formatSwarmKey } from './psk.ts'

export interface Libp2pRouterOptions {
  bootstrapper: Bootstrapper
  logger: Logger
  /** `--router-addr` (host:port; empty host ⇒ all interfaces, IPv4 and IPv6). Default `:5001`. */
  listenAddr?: string
  /** `--data-dir`: holds `private.key` so the peer id survives restarts. Unset ⇒ new identity per start. */
  dataDir?: string
  /**
   * The pre-shared key of a private network (`--router-psk-file`, parsed by parseSwarmKey): every connection is
   * encrypted with it before Noise, so only nodes with the same key can connect (go-libp2p's private networks alike).
   */
  psk?: Uint8Array
  /** Identity to use instead of `dataDir` (tests). */
  privateKey?: PrivateKey
  /** Accept and announce loopback addresses. Only for tests: in production other nodes cannot use them. */
  allowLoopback?: boolean
  /** How often our records are re-published. Default 15 min. */
  reprovideIntervalMs?: number
  /** How long provider records stay valid on other nodes. Default 19 min; must exceed reprovideIntervalMs. */
  providerTtlMs?: number
  lookupCacheTtlMs?: number
  lookupTimeoutMs?: number
  rebootstrapIntervalMs?: number
  bootstrapBackoffMinMs?: number
  bootstrapBackoffMaxMs?: number
  kBucketSize?: number
  /** Offsets after joining at which the DHT is explored to fill the routing table. Default 2 s, 10 s, 60 s. */
  exploreAfterJoinMs?: number[]
}

const silentLog: Libp2pLogger = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
  newScope: (): Libp2pLogger => silentLog,
})
const silentLogger: ComponentLogger = { forComponent: () => silentLog }

/** The parts of the kad-dht service we use beyond its exported interface (checked at start). */
export interface DhtService extends KadDHT {
  routingTable: { size: number, kb: { toIterable: () => Iterable<{ peerId: PeerId }> } }
  providers: {
    addProvider(cid: CID, provider: PeerId): Promise<void>
    getProviders(cid: CID, options?: { signal?: AbortSignal }): Promise<PeerId[]>
  }
}

// A type alias, not an interface: libp2p's ServiceMap needs an index signature.
export type Services = {
  identify: Identify
  ping: Ping
  dht: KadDHT
}

/** A started libp2p node serving the DHT, and the port it listens on. */
export interface DhtNode {
  node: Libp2p<Services>
  dht: DhtService
  port: number
}

/**
 * Assembles and starts the libp2p node: TCP, the swarm key's protector when given, Noise, yamux, identify, ping, and
 * kad-dht in server mode on `/spegel/kad/1.0.0` (wire-compatible with Spegel's DHT).
 */
export async function startDhtNode (init: Libp2pRouterOptions): Promise<DhtNode> {
  const allowLoopback = init.allowLoopback ?? false
  const listen = routerListenAddrs(init.listenAddr ?? defaultRouterAddr)
  const { port } = parseHostPort(init.listenAddr ?? defaultRouterAddr)
  const ttl = init.providerTtlMs ?? providerTtlMs
  const reprovide = init.reprovideIntervalMs ?? reprovideIntervalMs
  if (!(ttl > reprovide)) throw new RangeError(`provider TTL (${ttl} ms) must exceed the reprovide interval (${reprovide} ms)`)
  const privateKey = init.privateKey ?? await loadIdentity(init.dataDir, init.logger)
  const keepShareable = (addrs: Multiaddr[]): Multiaddr[] => addrs.filter((ma) => {
    const ip = multiaddrIp(ma)
    return ip !== undefined && isShareableIp(ip, allowLoopback)
  })
  const node = await createLibp2p<Services>({
    // Started below, once the peer store skips merges that add nothing (see peer-store-memo.ts).
    start: false,
    // libp2p's own debug logging costs CPU on every stream even when off (it creates a logger and checks the
    // terminal each time); it is kept only when asked for with DEBUG=libp2p:*.
    ...(/libp2p/.test(process.env.DEBUG ?? '') ? {} : { logger: silentLogger }),
    privateKey,
    addresses: {
      listen,
      // Public IPs would otherwise stay unannounced until AutoNAT confirms them; a LAN DHT has no AutoNAT.
      appendAnnounce: port === 0 ? [] : publicInterfaceAddrs(listen, port),
      announceFilter: keepShareable,
    },
    // Every connection is pinged on a new stream this often (libp2p's default is 10 s). Dead peers are also found by
    // yamux keep-alives and failed queries; in a large cluster the pings were most of an idle node's CPU.
    connectionMonitor: { pingInterval: connectionPingIntervalMs },
    transports: [tcp()],
    ...(init.psk !== undefined ? { connectionProtector: preSharedKey({ psk: formatSwarmKey(init.psk) }) } : {}),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: {
      // Cluster peers are few and trusted; the defaults (5 inbound/s per host) throttle a burst of joins.
      inboundConnectionThreshold: 100,
      maxIncomingPendingConnections: 100,
      ...(allowLoopback ? { allow: ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128'] } : {}),
    },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: dhtProtocol,
        clientMode: false,
        kBucketSize: init.kBucketSize ?? kBucketSize,
        // Go's kad-dht (Spegel) asks 3 peers at a time; js-libp2p's default asks 10 on each of 10 disjoint paths, a
        // burst of up to 20 streams per lookup that mostly slows the answer it waits for. The paths stay as many as
        // alpha (3): one path can end before all its starting peers are queued (seen under load), others cover it.
        alpha: queryAlpha,
        // LAN peers: keep private addresses (the default mapper drops them), drop unusable ones.
        peerInfoMapper: (info: Libp2pPeerInfo): Libp2pPeerInfo => ({ ...info, multiaddrs: keepShareable(info.multiaddrs) }),
        // Never block a query waiting for peers: an empty table means "nobody to ask", answered at once.
        allowQueryWithZeroPeers: true,
        maxInboundStreams: dhtMaxInboundStreams,
        reprovide: {
          validity: ttl,
          threshold: ttl - reprovide,
          // Check often enough that a record is re-published before it expires elsewhere.
          interval: Math.max(50, Math.min(60_000, Math.floor((ttl - reprovide) / 2))),
        },
      }),
    },
  })
  memoizePeerStoreMerges(node.peerStore)
  try {
    await node.start()
  } catch (err) {
    // A listen address in use, for instance: what did start is stopped.
    await Promise.resolve(node.stop()).catch(() => {})
    throw err
  }
  const dht = node.services.dht as Partial<DhtService>
  if (typeof dht.routingTable?.size !== 'number' || typeof dht.routingTable.kb?.toIterable !== 'function' || typeof dht.providers?.addProvider !== 'function' || typeof dht.providers.getProviders !== 'function') {
    await node.stop()
    throw new Error('unsupported @libp2p/kad-dht version: routingTable/providers not found')
  }
  return { node, dht: dht as DhtService, port: actualPort(node) ?? port }
}

/** `/ipX/<public ip>/tcp/<port>` for each public interface IP covered by the listen addresses. */
function publicInterfaceAddrs (listen: string[], port: number): string[] {
  const out: string[] = []
  const wildcard4 = listen.some((l) => l.startsWith('/ip4/0.0.0.0/'))
  const wildcard6 = listen.some((l) => l.startsWith('/ip6/::/'))
  const explicit = new Set(listen.map((l) => multiaddrIp(l)).filter((ip): ip is string => ip !== undefined))
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal || !isShareableIp(a.address, false) || isPrivateIp(a.address)) continue
      const v6 = a.family === 'IPv6'
      if ((v6 ? wildcard6 : wildcard4) || explicit.has(a.address)) out.push(`/${v6 ? 'ip6' : 'ip4'}/${a.address}/tcp/${port}`)
    }
  }
  return out
}

/** Private ranges that libp2p already treats as verified (RFC 1918, CGNAT, ULA). */
function isPrivateIp (ip: string): boolean {
  return /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/.test(ip) || /^f[cd]/i.test(ip)
}

function actualPort (node: Libp2p<Services>): number | undefined {
  for (const ma of node.getMultiaddrs()) {
    const tcp = ma.getComponents().find((c) => c.name === 'tcp')
    if (tcp?.value !== undefined) return Number(tcp.value)
  }
  return undefined
}
