import { lookup as dnsLookup } from 'node:dns/promises'
import { readFile } from 'node:fs/promises'
import { createServer, request as httpRequest } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { parseHostPort } from '../util/addr.ts'
import { Header } from '../util/http.ts'
import { BootstrapError } from './errors.ts'
import type { RouterOptions } from './types.ts'

/** A candidate peer to join the DHT through. */
export interface BootstrapPeer {
  /** Peer id when known; without it the router dials the address and learns the id from the Noise handshake. */
  id?: string
  /** Multiaddrs without `/p2p/`; an address without a transport part (`/ip4/10.0.0.2`) gets the router's own port. */
  addrs: string[]
}

/** What this node tells others about itself (served by the HTTP bootstrapper at `/id`). */
export interface SelfInfo {
  id: string
  addrs: string[]
}

/**
 * Where to find the first peers. `peers()` may include this node itself (the router filters it out by id and by
 * address) and returns [] when nobody else is known, which the router treats as "alone" (a one-node cluster).
 * It throws BootstrapError when the answer cannot be determined (DNS or HTTP failure), which is retried.
 */
export interface Bootstrapper {
  peers(options?: RouterOptions): Promise<BootstrapPeer[]>
  /** Called by the router once the node listens. */
  start?(self: () => SelfInfo): Promise<void>
  close?(): Promise<void>
}

/** Splits a multiaddr string into its address part and its `/p2p/<id>` (if any). */
export function splitPeerAddr (text: string): { id?: string, addr?: string } {
  let ma
  try {
    ma = multiaddr(text)
  } catch (err) {
    throw new BootstrapError(`invalid multiaddr ${JSON.stringify(text)}`, { cause: err })
  }
  const components = ma.getComponents()
  const id = components.findLast((c) => c.name === 'p2p')?.value
  const rest = components.filter((c) => c.name !== 'p2p')
  const addr = rest.length === 0 ? undefined : multiaddr(rest).toString()
  return { ...(id !== undefined ? { id } : {}), ...(addr !== undefined ? { addr } : {}) }
}

/** Groups multiaddr strings into peers: same `/p2p/` id ⇒ one peer; id-less addresses are one peer each. */
export function groupPeerAddrs (texts: string[]): BootstrapPeer[] {
  const byId = new Map<string, BootstrapPeer>()
  const anonymous: BootstrapPeer[] = []
  for (const text of texts) {
    const { id, addr } = splitPeerAddr(text)
    if (id === undefined) {
      if (addr !== undefined) anonymous.push({ addrs: [addr] })
      continue
    }
    const peer = byId.get(id) ?? { id, addrs: [] }
    if (addr !== undefined && !peer.addrs.includes(addr)) peer.addrs.push(addr)
    byId.set(id, peer)
  }
  return [...byId.values(), ...anonymous]
}

/** `--bootstrap-kind=static`: a fixed list of multiaddrs, with or without `/p2p/<id>`. */
export class StaticBootstrapper implements Bootstrapper {
  private readonly list: BootstrapPeer[]

  constructor (addrs: string[]) {
    this.list = groupPeerAddrs(addrs.map((a) => a.trim()).filter((a) => a !== ''))
  }

  async peers (options?: RouterOptions): Promise<BootstrapPeer[]> {
    options?.signal?.throwIfAborted()
    return this.list.map((p) => ({ ...p, addrs: [...p.addrs] }))
  }
}

/** Resolves a name for one address family; returns the IPs (possibly none). */
export type ResolveFn = (name: string, family: 4 | 6, options?: RouterOptions) => Promise<string[]>

/** getaddrinfo, like Go's resolver: honours /etc/hosts and the search domains of resolv.conf. */
export const systemResolve: ResolveFn = async (name, family) => {
  const found = await dnsLookup(name, { all: true, family })
  return found.map((a) => a.address)
}

/** How many IPs per address family a DNS answer contributes (Spegel: 3). */
export const dnsPeersPerFamily = 3

export interface DnsBootstrapperOptions {
  domain: string
  resolve?: ResolveFn
}

/**
 * `--bootstrap-kind=dns`: resolves the domain (a headless Service) separately for A and AAAA, sorts each family
 * ascending, takes the first 3 of each, and returns address-only peers. Fails only when both families fail.
 */
export class DnsBootstrapper implements Bootstrapper {
  private readonly domain: string
  private readonly resolve: ResolveFn

  constructor (init: DnsBootstrapperOptions) {
    if (init.domain === '') throw new BootstrapError('dns bootstrap needs a domain')
    this.domain = init.domain
    this.resolve = init.resolve ?? systemResolve
  }

  async peers (options?: RouterOptions): Promise<BootstrapPeer[]> {
    const results = await Promise.allSettled([4, 6].map(async (family) => {
      const ips = await this.resolve(this.domain, family as 4 | 6, options)
      return ips.filter((ip) => isIP(ip) === family).sort(compareIps).slice(0, dnsPeersPerFamily)
    }))
    options?.signal?.throwIfAborted()
    const failures = results.filter((r) => r.status === 'rejected')
    if (failures.length === results.length) {
      throw new BootstrapError(`could not resolve ${this.domain}`, { cause: new AggregateError(failures.map((f) => f.reason)) })
    }
    const peers: BootstrapPeer[] = []
    for (const r of results) {
      if (r.status !== 'fulfilled') continue
      for (const ip of r.value) peers.push({ addrs: [`/${isIP(ip) === 6 ? 'ip6' : 'ip4'}/${ip}`] })
    }
    return peers
  }
}

function ipBytes (ip: string): number[] {
  if (isIP(ip) === 4) return ip.split('.').map(Number)
  // Expand "::" so that addresses compare by value, not by text.
  const [head = '', tail] = ip.split('::') as [string, string | undefined]
  const h = head === '' ? [] : head.split(':')
  const t = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  return groups.flatMap((g) => { const n = parseInt(g, 16); return [n >> 8, n & 0xff] })
}

export function compareIps (a: string, b: string): number {
  const x = ipBytes(a)
  const y = ipBytes(b)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

/** How many entries of an HTTP bootstrap answer are used (Spegel: 3). */
export const httpPeersLimit = 3
export const httpBootstrapTimeoutMs = 10_000

export interface HttpBootstrapperOptions {
  /** `--http-bootstrap-url`: fetched for `[{"ID": "...", "Addrs": ["..."]}]`. Unset ⇒ no peers from HTTP. */
  url?: string
  /**
   * `--http-bootstrap-peer` (Spegel v0.7): base URL of a peer (`http://10.0.0.1:5002`); `<peer>/id` is fetched for that
   * peer's single `{"Addrs": [...], "ID": "..."}`, and this node's own `/id` answers in the same shape. An alternative
   * to `url`, not to be combined with it.
   */
  peer?: string
  /** `--http-bootstrap-addr`: when set, this node serves its own address info at `/id`. */
  listenAddr?: string
  /** `--http-bootstrap-cert-dir`: optional `ca.crt`, `tls.crt` + `tls.key` for https URLs (client side). */
  certDir?: string
  timeoutMs?: number
}

interface AddrInfoJson { ID?: unknown, Addrs?: unknown }

function isAddrInfo (value: unknown): value is AddrInfoJson {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && ('ID' in value || 'Addrs' in value)
}

function checkedUrl (text: string): string {
  let u: URL
  try {
    u = new URL(text)
  } catch (err) {
    throw new BootstrapError(`invalid bootstrap URL ${JSON.stringify(text)}`, { cause: err })
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new BootstrapError(`unsupported bootstrap URL ${text}: want http or https`)
  return u.href
}

/**
 * Spegel v0.7 fetches `peer + "/id"`, a plain concatenation. A peer given with a trailing slash then asks for `//id`,
 * which Go's ServeMux answers with a redirect to `/id` that Go's client follows; collapsing the slashes here ends at
 * the same place without following redirects.
 */
export function peerIdUrl (peer: string): string {
  const u = new URL(checkedUrl(peer + '/id'))
  u.pathname = u.pathname.replace(/\/{2,}/g, '/')
  return u.href
}

/**
 * `--bootstrap-kind=http`: fetch peers from a URL, and optionally serve this node's address info at `/id`.
 *
 * Two generations of Spegel's flags are understood. Newer Spegel fetches `--http-bootstrap-url` for a JSON array of
 * address infos and serves a one-element array. Spegel v0.7 (`pkg/routing/bootstrap.go`, `HTTPBootstrapper`) fetches
 * `--http-bootstrap-peer` + `/id` for one address info object and serves one object; with `peer` this class does the
 * same, so a node can join a v0.7 cluster and v0.7 nodes can bootstrap from it. An answer in either shape is read
 * whichever flag fetched it. Unlike v0.7: without `--http-bootstrap-addr` nothing is served (v0.7 would listen on
 * port 80), without a peer or URL the node starts alone (v0.7 fails every bootstrap), and an entry without an ID is
 * dialled to learn it (v0.7 rejects the answer).
 */
export class HttpBootstrapper implements Bootstrapper {
  private readonly init: HttpBootstrapperOptions
  /** What `peers()` fetches: the URL, or the peer's `/id`. */
  private readonly source: string | undefined
  private server?: Server

  constructor (init: HttpBootstrapperOptions) {
    const url = init.url ?? ''
    const peer = init.peer ?? ''
    if (url !== '' && peer !== '') {
      throw new BootstrapError('--http-bootstrap-url and --http-bootstrap-peer are alternatives (newer Spegel and Spegel v0.7): set one')
    }
    this.source = url !== '' ? checkedUrl(url) : peer !== '' ? peerIdUrl(peer) : undefined
    this.init = init
  }

  async peers (options?: RouterOptions): Promise<BootstrapPeer[]> {
    const url = this.source
    if (url === undefined) return []
    const body = await this.get(url, options)
    let parsed: unknown
    try {
      parsed = JSON.parse(body)
    } catch (err) {
      throw new BootstrapError(`bootstrap URL ${url} did not return JSON`, { cause: err })
    }
    // An array from newer Spegel (first 3 used), one object from v0.7.
    const entries = Array.isArray(parsed) ? parsed.slice(0, httpPeersLimit) : isAddrInfo(parsed) ? [parsed] : undefined
    if (entries === undefined) throw new BootstrapError(`bootstrap URL ${url} did not return a JSON array or an {"ID","Addrs"} object`)
    const peers: BootstrapPeer[] = []
    for (const entry of entries as AddrInfoJson[]) {
      const addrs = Array.isArray(entry?.Addrs) ? entry.Addrs.filter((a): a is string => typeof a === 'string') : []
      let id = typeof entry?.ID === 'string' && entry.ID !== '' ? entry.ID : undefined
      const plain: string[] = []
      for (const text of addrs) {
        const split = splitPeerAddr(text)
        id ??= split.id
        if (split.addr !== undefined && !plain.includes(split.addr)) plain.push(split.addr)
      }
      if (plain.length > 0) peers.push({ ...(id !== undefined ? { id } : {}), addrs: plain })
    }
    return peers
  }

  private async get (url: string, options?: RouterOptions): Promise<string> {
    const timeout = AbortSignal.timeout(this.init.timeoutMs ?? httpBootstrapTimeoutMs)
    const signal = options?.signal !== undefined ? AbortSignal.any([options.signal, timeout]) : timeout
    const tls = url.startsWith('https:') ? await this.tlsOptions() : {}
    return await new Promise<string>((resolve, reject) => {
      const requestFn = url.startsWith('https:') ? httpsRequest : httpRequest
      const req = requestFn(url, { method: 'GET', signal, ...tls }, (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          res.resume()
          reject(new BootstrapError(`bootstrap URL ${url} answered ${res.statusCode ?? 'no status'}`))
          return
        }
        res.setEncoding('utf8')
        let text = ''
        res.on('data', (chunk: string) => {
          text += chunk
          // The answer is a handful of addresses; refuse to buffer anything large.
          if (text.length > 1 << 20) req.destroy(new BootstrapError(`bootstrap answer from ${url} is too large`))
        })
        res.on('end', () => resolve(text))
        res.on('error', reject)
      })
      req.on('error', (err) => reject(err instanceof BootstrapError ? err : new BootstrapError(`bootstrap URL ${url} failed: ${err.message}`, { cause: err })))
      req.end()
    })
  }

  private async tlsOptions (): Promise<{ ca?: Buffer, cert?: Buffer, key?: Buffer, minVersion: 'TLSv1.2' }> {
    const dir = this.init.certDir
    const out: { ca?: Buffer, cert?: Buffer, key?: Buffer, minVersion: 'TLSv1.2' } = { minVersion: 'TLSv1.2' }
    if (dir === undefined || dir === '') return out
    const read = async (name: string): Promise<Buffer | undefined> => {
      try {
        return await readFile(join(dir, name))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw new BootstrapError(`cannot read ${join(dir, name)}`, { cause: err })
      }
    }
    const [ca, cert, key] = await Promise.all([read('ca.crt'), read('tls.crt'), read('tls.key')])
    if (ca !== undefined) out.ca = ca
    if (cert !== undefined && key !== undefined) {
      out.cert = cert
      out.key = key
    }
    return out
  }

  async start (self: () => SelfInfo): Promise<void> {
    const listenAddr = this.init.listenAddr
    if (listenAddr === undefined || listenAddr === '' || this.server !== undefined) return
    const { host, port } = parseHostPort(listenAddr)
    const server = createServer((req, res) => {
      // Any method, like Go's mux pattern "/id"; `//id` too, which Go's mux redirects to /id (see peerIdUrl).
      const path = (req.url ?? '/').split('?')[0]?.replace(/\/{2,}/g, '/')
      if (path !== '/id') {
        res.writeHead(404).end()
        return
      }
      const info = self()
      // go-libp2p's AddrInfo.MarshalJSON marshals a map, so the keys come sorted: Addrs, then ID.
      const addrInfo = { Addrs: info.addrs, ID: info.id }
      res.writeHead(200, { [Header.contentType]: 'application/json' })
      res.end(JSON.stringify(this.init.peer !== undefined && this.init.peer !== '' ? addrInfo : [addrInfo]))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ port, ...(host !== '' ? { host } : {}) }, () => {
        server.off('error', reject)
        resolve()
      })
    })
    this.server = server
  }

  /** The bound port of the `/id` server (useful with port 0). */
  port (): number | undefined {
    const a = this.server?.address()
    return typeof a === 'object' && a !== null ? a.port : undefined
  }

  async close (): Promise<void> {
    const server = this.server
    if (server === undefined) return
    this.server = undefined
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
