import http from 'node:http'
import https from 'node:https'
import { createSecureContext, getCACertificates, type SecureContext } from 'node:tls'

/**
 * A small HTTP client on node:http and node:https, for the daemon's few requests to upstream registries (tag
 * confirmation). The global fetch would do, but its first use in a process compiles Node's bundled undici: about
 * 0.3 s of CPU per daemon, paid in the middle of the first pull a peer serves (seen in the fan-out's CPU profiles).
 */

export interface HttpReply {
  status: number
  /** A response header (repeated ones joined with ", "); undefined when absent. */
  header: (name: string) => string | undefined
  /** The body as text; undefined when it is longer than `maxBytes` (the rest is not read). */
  text: (maxBytes: number) => Promise<string | undefined>
  /** Reads and drops the body, so the connection can be reused. */
  discard: () => void
}

export interface HttpRequestInit {
  method: 'GET' | 'HEAD'
  headers?: Record<string, string>
  signal: AbortSignal
  /**
   * For https: CA certificates trusted besides the system's, and whether the certificate is verified at all (false
   * only as containerd's `skip_verify` says). Not carried to another origin by a redirect.
   */
  tls?: { ca?: readonly Buffer[], verify?: boolean }
}

export type HttpRequest = (url: URL, init: HttpRequestInit) => Promise<HttpReply>

const maxRedirects = 5
const redirects = new Set([301, 302, 303, 307, 308])

/**
 * An HttpRequest that goes through the proxies `env` names (HTTP_PROXY, HTTPS_PROXY and NO_PROXY, either case, as
 * containerd and most tools read them; https through a CONNECT tunnel), directly without them: a node that reaches
 * its registries only through a proxy confirms tags the same way.
 */
export function httpRequestWith (env: Record<string, string | undefined>): HttpRequest {
  const proxied = ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'].some((k) => (env[k] ?? '') !== '')
  const agents = proxied
    ? { http: new http.Agent({ keepAlive: true, proxyEnv: env }), https: new https.Agent({ keepAlive: true, proxyEnv: env }) }
    : undefined
  return async (url, init) => await request(url, init, agents)
}

/**
 * A TLS context trusting Node's default CAs (its bundled roots, or the system's with --use-system-ca /
 * NODE_EXTRA_CA_CERTS) plus `extra`: made once per list (the caller keeps its list while the trust holds), not per
 * connection, which would parse the ~150 default roots each time.
 */
function contextTrusting (extra: readonly Buffer[]): SecureContext {
  let context = contexts.get(extra)
  if (context === undefined) {
    context = createSecureContext({ ca: [...getCACertificates('default'), ...extra] })
    contexts.set(extra, context)
  }
  return context
}
const contexts = new WeakMap<readonly Buffer[], SecureContext>()

/** Sends one request with the process environment's proxies (see httpRequestWith). */
export async function httpRequest (url: URL, init: HttpRequestInit): Promise<HttpReply> {
  defaultRequest ??= httpRequestWith(process.env)
  return await defaultRequest(url, init)
}
let defaultRequest: HttpRequest | undefined

/**
 * Sends one request, following up to five redirects (an Authorization header is not sent on to another origin).
 * Rejects on a connection error, an unsupported scheme, too many redirects, or when `signal` aborts.
 */
async function request (url: URL, init: HttpRequestInit, agents: { http: http.Agent, https: https.Agent } | undefined): Promise<HttpReply> {
  let target = url
  let headers = init.headers ?? {}
  let tls = init.tls
  for (let hops = 0; ; hops++) {
    const reply = await send(target, init.method, headers, init.signal, agents, tls)
    const location = reply.header('location')
    if (!redirects.has(reply.status) || location === undefined) return reply
    reply.discard()
    if (hops === maxRedirects) throw new Error(`more than ${maxRedirects} redirects from ${url.origin}`)
    const next = new URL(location, target)
    if (next.origin !== target.origin) {
      headers = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'))
      tls = undefined
    }
    target = next
  }
}

async function send (url: URL, method: string, headers: Record<string, string>, signal: AbortSignal, agents: { http: http.Agent, https: https.Agent } | undefined, tls: HttpRequestInit['tls']): Promise<HttpReply> {
  const secure = url.protocol === 'https:'
  if (!secure && url.protocol !== 'http:') throw new Error(`unsupported scheme ${url.protocol}`)
  signal.throwIfAborted()
  const agent = agents === undefined ? undefined : secure ? agents.https : agents.http
  // Agents pool connections by host and options, and a secureContext is not among them: a request with trust of its own
  // gets a connection of its own (no agent) rather than one made with other trust. Through a proxy the proxy's agent
  // is kept; its connections to a registry were all made with that registry's trust, which changes only with its
  // hosts.toml.
  const custom = secure && tls !== undefined
  const trust = custom
    ? { ...((tls.ca?.length ?? 0) > 0 ? { secureContext: contextTrusting(tls.ca!) } : {}), ...(tls.verify === false ? { rejectUnauthorized: false } : {}), ...(agent === undefined ? { agent: false as const } : {}) }
    : {}
  return await new Promise<HttpReply>((resolve, reject) => {
    const req = (secure ? https : http).request(url, { method, headers, signal, ...trust, ...(agent !== undefined ? { agent } : {}) }, (res) => { resolve(reply(res)) })
    req.once('error', reject)
    req.end()
  })
}

function reply (res: http.IncomingMessage): HttpReply {
  // An error after the head (a reset, the signal) ends the body; text() sees it through 'close'.
  res.on('error', () => {})
  return {
    status: res.statusCode ?? 0,
    header: (name) => {
      const value = res.headers[name.toLowerCase()]
      return Array.isArray(value) ? value.join(', ') : value
    },
    text: async (maxBytes) => await new Promise<string | undefined>((resolve, reject) => {
      const chunks: Buffer[] = []
      let length = 0
      res.on('data', (chunk: Buffer) => {
        length += chunk.length
        if (length > maxBytes) { res.destroy(); resolve(undefined); return }
        chunks.push(chunk)
      })
      res.once('end', () => { resolve(Buffer.concat(chunks).toString('utf8')) })
      res.once('close', () => { if (!res.complete) reject(new Error('the response ended early')) })
    }),
    discard: () => { res.resume() },
  }
}
