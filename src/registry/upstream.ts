import { manifestAccept } from '../oci/mediatypes.ts'
import { serverForRegistry } from '../hosts/toml.ts'
import type { RegistryUrl } from '../hosts/url.ts'
import { Header } from '../util/http.ts'
import type { UpstreamAccess } from '../hosts/upstream-access.ts'
import { httpRequest, type HttpReply, type HttpRequest, type HttpRequestInit } from '../util/http-client.ts'

/**
 * What the upstream registry says of a tag a peer answered:
 * - `confirmed`: the upstream resolves the tag to the same digest;
 * - `differs`: it resolves it to another digest (a peer answered with an image of its own, or the tag moved);
 * - `unconfirmable`: it answered but would not say (401/403 after an anonymous token: a private repository; 404: the
 *   upstream does not have the tag);
 * - `unreachable`: no answer at all (the upstream is down, or this node cannot reach it).
 */
export type TagCheck =
  | { outcome: 'confirmed' }
  | { outcome: 'differs', upstream: string }
  | { outcome: 'unconfirmable', status: number }
  | { outcome: 'unreachable', reason: string }

export interface TagConfirmerOptions {
  /** --mirrored-registries: the scheme of a listed registry is used (http for a plain-HTTP registry). */
  registries: readonly RegistryUrl[]
  /** Longest wait for the upstream's answers, token included (default 5 s). */
  timeoutMs?: number
  /** Answers kept for this long per registry, repository, tag and digest (default 10 s). */
  cacheTtlMs?: number
  /**
   * After a registry could not be reached, it is taken as unreachable without asking for this long (default 10 s):
   * during an outage only the first tag of a rollout waits for the timeout, the others are answered from peers at once.
   */
  downTtlMs?: number
  /**
   * How containerd reaches a registry (its hosts.toml: the server, a private CA, skip_verify): the upstream is asked
   * the same way. Read again after accessTtlMs. Without it: the system's CAs, https unless the registry is listed.
   */
  access?: (registry: string) => Promise<UpstreamAccess | undefined>
  /** How long a registry's access is reused (default 30 s). */
  accessTtlMs?: number
  /** For tests: how requests are sent. */
  request?: HttpRequest
}

/** Bearer challenges larger than this are not a registry's. */
const maxTokenBytes = 64 * 1024

/**
 * Asks a tag's upstream registry which digest the tag names, as containerd itself would before a pull: a HEAD of the
 * manifest, with an anonymous bearer token when the registry asks for one (Docker Hub, GHCR, most registries; Docker
 * Hub does not count HEADs against its rate limit). Used before a tag that a peer resolved is handed to containerd, so
 * a node in the DHT cannot make others run its image under a name it does not own.
 */
export class TagConfirmer {
  private readonly options: Required<TagConfirmerOptions>
  private readonly cache = new Map<string, { check: TagCheck, until: number }>()
  /** Registries that could not be reached, until when they are not asked again. */
  private readonly down = new Map<string, { reason: string, until: number }>()
  private readonly accesses = new Map<string, { access: UpstreamAccess | undefined, until: number }>()

  constructor (options: TagConfirmerOptions) {
    this.options = { timeoutMs: 5_000, cacheTtlMs: 10_000, downTtlMs: 10_000, access: async () => undefined, accessTtlMs: 30_000, request: httpRequest, ...options }
  }

  async check (registry: string, repository: string, tag: string, digest: string, signal: AbortSignal): Promise<TagCheck> {
    const key = `${registry}/${repository}:${tag}@${digest}`
    const now = performance.now()
    const cached = this.cache.get(key)
    if (cached !== undefined && cached.until > now) return cached.check
    const down = this.down.get(registry)
    if (down !== undefined && down.until > now) return { outcome: 'unreachable', reason: `${down.reason} (not asked again for ${Math.round((down.until - now) / 1000)} s)` }
    const check = await this.ask(registry, repository, tag, digest, AbortSignal.any([signal, AbortSignal.timeout(this.options.timeoutMs)]))
    signal.throwIfAborted()
    if (check.outcome === 'unreachable') {
      if (this.down.size > 1000) this.down.clear()
      this.down.set(registry, { reason: check.reason, until: performance.now() + this.options.downTtlMs })
      return check
    }
    this.down.delete(registry)
    if (this.cache.size > 1000) this.cache.clear()
    this.cache.set(key, { check, until: now + this.options.cacheTtlMs })
    return check
  }

  /**
   * `scheme://host` of the registry's API: a listed registry's own URL (Docker Hub's is registry-1.docker.io), else the
   * server containerd's configuration names, else https.
   */
  base (registry: string, access?: UpstreamAccess): string {
    const listed = this.options.registries.find((r) => !r.wildcard && r.host === registry)
    if (listed === undefined && access?.server !== undefined) return access.server
    return serverForRegistry(listed ?? { wildcard: false, scheme: 'https', host: registry, href: `https://${registry}` }) ?? `https://${registry}`
  }

  /** The registry's access from containerd's configuration, reused for accessTtlMs; undefined when it cannot be read. */
  private async accessOf (registry: string): Promise<UpstreamAccess | undefined> {
    const now = performance.now()
    const cached = this.accesses.get(registry)
    if (cached !== undefined && cached.until > now) return cached.access
    // A file that cannot be read or parsed leaves the system's trust: at worst the upstream is taken as unreachable.
    const access = await this.options.access(registry).catch(() => undefined)
    if (this.accesses.size > 1000) this.accesses.clear()
    this.accesses.set(registry, { access, until: now + this.options.accessTtlMs })
    return access
  }

  private async ask (registry: string, repository: string, tag: string, digest: string, signal: AbortSignal): Promise<TagCheck> {
    try {
      const access = await this.accessOf(registry)
      const url = new URL(`${this.base(registry, access)}/v2/${repository}/manifests/${encodeURIComponent(tag)}`)
      const tls = access !== undefined ? { ca: access.ca, verify: !access.skipVerify } : undefined
      let res = await this.head(url, undefined, signal, tls)
      if (res.status === 401) {
        const token = await this.token(res.header('www-authenticate'), repository, signal, url.origin, tls)
        if (token === undefined) return { outcome: 'unconfirmable', status: 401 }
        res = await this.head(url, `Bearer ${token}`, signal, tls)
      }
      if (res.status >= 500) return { outcome: 'unreachable', reason: `the upstream answered ${res.status}` }
      if (res.status !== 200) return { outcome: 'unconfirmable', status: res.status }
      const upstream = res.header(Header.dockerContentDigest)
      if (upstream === undefined || upstream === '') return { outcome: 'unconfirmable', status: res.status }
      return upstream === digest ? { outcome: 'confirmed' } : { outcome: 'differs', upstream }
    } catch (err) {
      if (signal.aborted && (signal.reason as Error | undefined)?.name !== 'TimeoutError') throw err
      return { outcome: 'unreachable', reason: err instanceof Error ? err.message : String(err) }
    }
  }

  private async head (url: URL, authorization: string | undefined, signal: AbortSignal, tls: HttpRequestInit['tls']): Promise<HttpReply> {
    const res = await this.options.request(url, {
      method: 'HEAD',
      headers: { [Header.accept]: manifestAccept, ...(authorization !== undefined ? { authorization } : {}) },
      signal,
      ...(tls !== undefined ? { tls } : {}),
    })
    res.discard()
    return res
  }

  /** An anonymous pull token from the realm a `WWW-Authenticate: Bearer …` challenge names; undefined if none is given. */
  private async token (challenge: string | undefined, repository: string, signal: AbortSignal, serverOrigin: string, tls: HttpRequestInit['tls']): Promise<string | undefined> {
    const params = parseBearerChallenge(challenge ?? '')
    if (params === undefined || params.realm === undefined) return undefined
    let realm: URL
    try {
      realm = new URL(params.realm)
    } catch {
      return undefined
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') return undefined
    if (params.service !== undefined) realm.searchParams.set('service', params.service)
    realm.searchParams.set('scope', params.scope ?? `repository:${repository}:pull`)
    // The server's own trust only for a realm on the server itself (a token service elsewhere is verified as usual).
    const res = await this.options.request(realm, { method: 'GET', signal, ...(tls !== undefined && realm.origin === serverOrigin ? { tls } : {}) })
    if (res.status !== 200) {
      res.discard()
      return undefined
    }
    const text = await res.text(maxTokenBytes)
    if (text === undefined) return undefined
    try {
      const body = JSON.parse(text) as { token?: unknown, access_token?: unknown }
      const token = typeof body.token === 'string' && body.token !== '' ? body.token : body.access_token
      return typeof token === 'string' && token !== '' ? token : undefined
    } catch {
      return undefined
    }
  }
}

/** The parameters of a `Bearer realm="…",service="…",scope="…"` challenge; undefined for another scheme. */
export function parseBearerChallenge (header: string): Record<string, string> | undefined {
  const match = /^\s*bearer\s+(.*)$/is.exec(header)
  if (match === null) return undefined
  const params: Record<string, string> = {}
  for (const m of (match[1] ?? '').matchAll(/([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g)) {
    params[(m[1] ?? '').toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '')
  }
  return params
}
