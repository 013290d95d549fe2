import { createHash, type Hash } from 'node:crypto'
import http, { type ServerResponse } from 'node:http'
import https from 'node:https'
import type { ConnectionOptions } from 'node:tls'
import { Readable } from 'node:stream'
import { basicAuthHeaderValue, type BasicAuth } from '../hosts/auth.ts'
import { peerTlsOptions, type RegistryTls } from '../hosts/tls.ts'
import type { Logger } from '../log/index.ts'
import type { Metrics } from '../metrics/index.ts'
import { parseDigest } from '../oci/digest.ts'
import { tagReference } from '../oci/reference.ts'
import { manifestAccept, MediaType } from '../oci/mediatypes.ts'
import type { TagConfirmer } from './upstream.ts'
import type { Peer, Router } from '../routing/types.ts'
import { RegistryError } from './errors.ts'
import { identifier, type DistributionPath } from './path.ts'
import { ConnectTimeoutError, PeerBusyError, PeerConnection, PeerResponseError, StallError, type BodyChunk } from './peer-client.ts'
import type { ChunkAllowance } from './buffers.ts'
import { LatencyTracker, PeerSource } from './peers.ts'
import { defaultResolveRetries, defaultResolveTimeoutMs } from './constants.ts'
import { contentRange, resolveRange } from './range.ts'
import { InvalidRangeError } from '../oci/errors.ts'
import { endResponse, ResponseWriter, type WriteWatch } from './response.ts'
import type { Mirror, MirrorRequest, MirrorResponse } from './types.ts'
import { Header } from '../util/http.ts'

/**
 * The abort reason for work that is no longer wanted (a hedging loser, a finished body). One shared object: aborting
 * without a reason builds a DOMException with a stack trace each time, which shows in profiles of small requests.
 */
const finished = new Error('request finished')

/** Longest wait for a response head on a kept-alive connection to a peer (see PeerMirror.send). */
const reusedHeadTimeoutMs = 1000

/** Longest wait for a peer to resume a broken blob stream from. */
const resumeResolveTimeoutMs = 1000

export interface PeerMirrorOptions {
  router: Router
  /** Peers serve their registry on this port (Spegel's rule: the same as ours). */
  registryPort: number
  logger: Logger
  /** Longest wait for a peer while no request to a peer is in flight (--mirror-resolve-timeout). */
  resolveTimeoutMs?: number
  /** Providers asked from the DHT per request (--mirror-resolve-retries). */
  resolveRetries?: number
  /** A peer that does not accept the TCP connection within this time is skipped. */
  connectTimeoutMs?: number
  /** A peer that sends nothing for this long (headers or body) is abandoned. */
  stallTimeoutMs?: number
  /** Requests started per round (first + hedges + retries). */
  maxAttempts?: number
  /** Times a broken blob stream is resumed from another (or the same) peer. */
  maxResumes?: number
  /** How long a peer that sent bytes not matching their digest is avoided. */
  badPeerTtlMs?: number
  basicAuth?: BasicAuth
  /** `--registry-cert-dir`: peers are asked over TLS, with this node's certificate. */
  tls?: RegistryTls
  metrics?: Metrics
  /**
   * Confirms a tag a peer resolved with the upstream registry before it is answered (--confirm-tags): a digest the
   * upstream does not name for the tag, or will not name, is answered 404 (containerd then resolves the tag itself,
   * with its own credentials); only an unreachable upstream leaves the peers' answer standing.
   */
  tags?: TagConfirmer
}

/** A peer sent bytes that do not hash to the digest they were asked for. */
export class DigestMismatchError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DigestMismatchError'
  }
}

export { PeerResponseError }

/** What every request of one fetch shares: extra headers, and what its peer connections may hold beyond a chunk. */
interface RequestScope {
  headers?: Record<string, string>
  allowance?: ChunkAllowance
}

/** A response's head (status and headers) and its body, from node:http or from our own peer client. */
interface PeerReply {
  status: number
  header: (name: string) => string | undefined
  read: () => Promise<BodyChunk | null>
  destroy: () => void
  /** Done with a response whose body is not wanted (HEAD, empty): keeps a keep-alive socket usable. */
  discard: () => void
}

interface Attempt {
  peer: Peer
  /** The address of `peer` that answered. */
  address: string
  res: PeerReply
  /** Absolute position of the first and last byte in the body, and the total size. */
  start: number
  end: number
  size: number
  digest: string
  mediaType: string
}

/**
 * Serves content held by other nodes: finds providers in the DHT, requests the content from the best peer, hedges to
 * another when the first is slow, resumes a broken blob stream elsewhere, and checks the bytes against their digest
 * while streaming so a bad peer can never hand containerd a blob that verifies wrong.
 */
export class PeerMirror implements Mirror {
  private readonly init: Required<Omit<PeerMirrorOptions, 'basicAuth' | 'metrics' | 'tags' | 'tls'>> & Pick<PeerMirrorOptions, 'basicAuth' | 'metrics' | 'tags'>
  private readonly agent: http.Agent
  /** With `--registry-cert-dir`: this node's certificate for peers, theirs checked against the CA. */
  private readonly tls: ConnectionOptions | undefined
  private readonly latency = new LatencyTracker()
  private readonly badPeers = new Map<string, number>()
  private readonly auth: string | undefined

  constructor (init: PeerMirrorOptions) {
    this.init = {
      resolveTimeoutMs: defaultResolveTimeoutMs,
      resolveRetries: defaultResolveRetries,
      connectTimeoutMs: 300,
      stallTimeoutMs: 3000,
      maxAttempts: 4,
      maxResumes: 8,
      badPeerTtlMs: 10 * 60_000,
      ...init,
    }
    this.auth = init.basicAuth !== undefined
      ? basicAuthHeaderValue(init.basicAuth)
      : undefined
    this.tls = init.tls !== undefined ? peerTlsOptions(init.tls) : undefined
    const agentOptions = { keepAlive: true, maxSockets: 64, maxFreeSockets: 16, scheduling: 'lifo' } as const
    this.agent = this.tls !== undefined ? new https.Agent({ ...agentOptions, ...this.tls }) : new http.Agent(agentOptions)
  }

  /**
   * `lookupKey` asks the DHT for another key than the path's (the in-flight key of herd protection); `inflight`
   * tells the peer that bytes of a download still in progress are welcome (they are verified here all the same) and
   * asks the network itself, not this node's records or cache, which may not have heard of a claim made a moment
   * ago; `resolveTimeoutMs` replaces --mirror-resolve-timeout for this request.
   */
  async fetch (request: MirrorRequest, options: { lookupKey?: string, inflight?: boolean, resolveTimeoutMs?: number } = {}): Promise<MirrorResponse> {
    const { path, method } = request
    const scope: RequestScope = {
      ...(options.inflight === true ? { headers: { [Header.spegelInflight]: 'accept' } } : {}),
      // A download in progress comes at the upstream's pace: chunks flow as they fill, large buffers would hold
      // its bytes back.
      ...(request.allowance !== undefined && options.inflight !== true ? { allowance: request.allowance } : {}),
    }
    // Destroying the body (the client went away) cancels the peer requests, as the caller's signal does.
    const cancel = new AbortController()
    const signal = AbortSignal.any([request.signal, cancel.signal])
    const key = options.lookupKey ?? identifier(path)
    // Claims of downloads change within milliseconds: ask the claimants themselves.
    const source = this.peerSource(key, signal, options.inflight === true)
    let handedOver = false
    try {
      // Peers are always asked for the whole content, never for the client's range: a range is cut out here, after
      // the size is known, and the bytes before and after it are read and hashed too, so a range is verified
      // against the digest like a whole blob (re-reading the rest from a peer is cheap next to the upstream).
      const first = await this.race(source, path, method, undefined, signal, false, scope, options.resolveTimeoutMs)
      if (path.kind === 'manifests' && path.tag !== undefined && this.init.tags !== undefined) await this.confirmTag(path, path.tag, first, signal)
      const size = first.size
      let window = { start: 0, end: size - 1 }
      if (request.range !== undefined) {
        try {
          window = resolveRange(request.range, size)
        } catch (err) {
          first.res.destroy()
          if (!(err instanceof InvalidRangeError)) throw err
          throw new RegistryError(416, 'SIZE_INVALID', `range not satisfiable: ${err.message}`, { headers: { [Header.contentRange]: `bytes */${size}` } })
        }
      }
      const partial = request.range !== undefined
      const headers: Record<string, string> = {
        [Header.contentType]: partial ? MediaType.octetStream : first.mediaType,
        [Header.contentLength]: String(window.end - window.start + 1),
        [Header.dockerContentDigest]: first.digest,
      }
      if (path.kind === 'blobs') {
        headers[Header.acceptRanges] = 'bytes'
        if (partial) headers[Header.contentRange] = contentRange(window, size)
      }
      if (method === 'HEAD' || size === 0) {
        first.res.discard()
        return { status: partial ? 206 : 200, headers, peer: first.peer.id }
      }
      const body = new PeerBody(this.stream(source, path, first, window, signal, scope), cancel)
      handedOver = true
      return { status: partial ? 206 : 200, headers, body, peer: first.peer.id }
    } finally {
      if (!handedOver) source.close()
    }
  }

  /**
   * Where a peer serves a blob whole, for a redirect (--peer-redirect): the peers are asked with HEAD, as for a
   * fetch, and the first that holds the blob is named. Throws 404 (RegistryError) when no peer holds it.
   */
  async locate (path: DistributionPath, signal: AbortSignal): Promise<{ url: string, peer: string }> {
    if (path.kind !== 'blobs' || path.digest === undefined) throw new RegistryError(404, codeOf(path), 'only blobs are located')
    const source = this.peerSource(identifier(path), signal, false)
    try {
      const first = await this.race(source, path, 'HEAD', undefined, signal, false, {})
      first.res.discard()
      const host = first.address.includes(':') ? `[${first.address}]` : first.address
      return { url: `${this.tls !== undefined ? 'https' : 'http'}://${host}:${this.init.registryPort}${target(path)}`, peer: first.peer.id }
    } finally {
      source.close()
    }
  }

  close (): void {
    this.agent.destroy()
  }

  /** The providers of `key` to ask, best first, skipping peers caught lying; `thorough` asks the DHT itself. */
  private peerSource (key: string, signal: AbortSignal, thorough: boolean): PeerSource {
    return new PeerSource(this.init.router, key, Math.max(1, this.init.resolveRetries), { signal, avoid: (peer) => this.isBad(peer), metrics: this.init.metrics, thorough })
  }

  /** Throws 404 unless the upstream names `first`'s digest for the tag, or cannot be reached at all. */
  private async confirmTag (path: DistributionPath, tag: string, first: Attempt, signal: AbortSignal): Promise<void> {
    const check = path.registry === ''
      ? { outcome: 'unconfirmable' as const, status: 0 }
      : await this.init.tags!.check(path.registry, path.repository, tag, first.digest, signal)
    this.init.metrics?.tagChecks.inc({ outcome: check.outcome })
    if (check.outcome === 'confirmed') return
    const what = `${tagReference(path.registry, path.repository, tag)} (${first.digest} from peer ${first.peer.id})`
    if (check.outcome === 'unreachable') {
      this.init.logger.info({ tag: what, reason: check.reason }, 'the upstream cannot be reached to confirm a tag: the peer\'s answer is used')
      return
    }
    first.res.destroy()
    if (check.outcome === 'differs') {
      this.init.logger.warn({ tag: what, upstream: check.upstream }, 'a peer answered a tag with a digest the upstream does not name for it: not served')
      throw new RegistryError(404, 'MANIFEST_UNKNOWN', `manifest ${tagReference(path.registry, path.repository, tag)}: the upstream names another digest for this tag than the peers`)
    }
    this.init.logger.debug({ tag: what, status: check.status }, 'the upstream would not confirm a tag: containerd resolves it itself')
    throw new RegistryError(404, 'MANIFEST_UNKNOWN', `manifest ${tagReference(path.registry, path.repository, tag)}: the upstream did not confirm this tag (${check.status === 0 ? 'no registry named' : `HTTP ${check.status}`})`)
  }

  private isBad (peer: Peer): boolean {
    const until = this.badPeers.get(peer.id)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.badPeers.delete(peer.id)
    return false
  }

  /**
   * One round: requests the content from peers until one answers with valid headers. The first request starts as soon
   * as a peer is known; another starts when a request fails, or when the ones in flight are slower than the recent
   * 90th percentile (hedging). Losers are cancelled.
   */
  private async race (source: PeerSource, path: DistributionPath, method: 'GET' | 'HEAD', rangeHeader: string | undefined, signal: AbortSignal, allowReuse: boolean, scope: RequestScope, resolveTimeoutMs = this.init.resolveTimeoutMs): Promise<Attempt> {
    type Outcome = { id: number, ok: true, attempt: Attempt } | { id: number, ok: false, peer: Peer, err: unknown }
    const inflight = new Map<number, { promise: Promise<Outcome>, ac: AbortController }>()
    let attempts = 0
    let lastError: unknown
    const key = identifier(path)
    const start = (peer: Peer): void => {
      const id = ++attempts
      const ac = new AbortController()
      const started = performance.now()
      const promise = this.request(peer, path, method, rangeHeader, AbortSignal.any([signal, ac.signal]), scope)
        .then((attempt): Outcome => {
          this.latency.record(performance.now() - started)
          return { id, ok: true, attempt }
        }, (err: unknown): Outcome => ({ id, ok: false, peer, err }))
      inflight.set(id, { promise, ac })
    }
    const settled = (): Array<Promise<Outcome>> => [...inflight.values()].map((f) => f.promise)
    try {
      for (;;) {
        if (signal.aborted) throw new RegistryError(404, codeOf(path), `request for ${key} cancelled`)
        if (inflight.size === 0) {
          if (attempts >= this.init.maxAttempts) break
          // A resume has a client mid-transfer: finding another holder is worth more than the usual short wait.
          const peer = await source.next(allowReuse ? Math.max(resolveTimeoutMs, resumeResolveTimeoutMs) : resolveTimeoutMs, signal, allowReuse)
          if (peer === undefined) break
          start(peer)
          continue
        }
        const canHedge = attempts < this.init.maxAttempts && !source.exhausted
        let hedgeTimer: NodeJS.Timeout | undefined
        const waiters: Array<Promise<Outcome | 'hedge'>> = settled()
        if (canHedge) waiters.push(new Promise((resolve) => { hedgeTimer = setTimeout(() => { resolve('hedge') }, this.latency.quantile(0.9)) }))
        const winner = await Promise.race(waiters)
        clearTimeout(hedgeTimer)
        if (winner === 'hedge') {
          const peer = await source.next(0, signal)
          if (peer !== undefined) {
            start(peer)
          } else {
            // Nobody else to ask yet: wait for the request in flight or a new provider.
            await Promise.race([...settled(), source.waitForChange(2 ** 31 - 1, signal)])
          }
          continue
        }
        inflight.delete(winner.id)
        if (winner.ok) {
          source.release(winner.attempt.peer)
          return winner.attempt
        }
        lastError = winner.err
        source.fail(winner.peer)
        if (!signal.aborted) this.init.metrics?.peerFailures.inc({ reason: failureReason(winner.err) })
        this.init.logger.debug({ peer: winner.peer.id, err: winner.err, key }, 'peer request failed')
      }
      const detail = { attempts }
      if (attempts === 0) throw new RegistryError(404, codeOf(path), `could not find peer for ${key}`, { detail })
      throw new RegistryError(404, codeOf(path), `all request retries exhausted for ${key}`, { detail, cause: lastError })
    } finally {
      // Cancel the losers; one that already got headers has its response discarded.
      for (const { promise, ac } of inflight.values()) {
        ac.abort(finished)
        void promise.then((o) => { if (o.ok) { o.attempt.res.destroy(); source.release(o.attempt.peer) } })
      }
    }
  }

  /** Sends one request to one peer, trying its addresses in turn, and validates the response headers. */
  private async request (peer: Peer, path: DistributionPath, method: 'GET' | 'HEAD', rangeHeader: string | undefined, signal: AbortSignal, scope: RequestScope): Promise<Attempt> {
    let lastError: unknown
    for (const address of peer.addresses) {
      signal.throwIfAborted()
      try {
        const res = method === 'GET' && path.kind === 'blobs'
          ? await this.sendRaw(address, path, rangeHeader, signal, scope)
          : await this.send(address, path, method, rangeHeader, signal, scope)
        try {
          return { ...validate(peer, res, path, method, rangeHeader), address }
        } catch (err) {
          res.destroy()
          throw err
        }
      } catch (err) {
        // Any failure on one address (refused, unreachable, timed out, bad answer) moves on to the next one.
        if (signal.aborted) throw err
        lastError = err
      }
    }
    throw lastError ?? new PeerResponseError(`peer ${peer.id} has no address`)
  }

  /** Blob GETs: our own client reads into reused buffers (see peer-client.ts); the bulk of all bytes goes this way. */
  private async sendRaw (address: string, path: DistributionPath, rangeHeader: string | undefined, signal: AbortSignal, scope: RequestScope): Promise<PeerReply> {
    const conn = await PeerConnection.open({
      host: address,
      port: this.init.registryPort,
      target: target(path),
      headers: this.requestHeaders(path, rangeHeader, scope.headers),
      connectTimeoutMs: this.init.connectTimeoutMs,
      ...(scope.allowance !== undefined ? { allowance: scope.allowance } : {}),
      stallTimeoutMs: this.init.stallTimeoutMs,
      signal,
      ...(this.tls !== undefined ? { tls: this.tls } : {}),
    })
    return {
      status: conn.status,
      header: (name) => conn.header(name),
      read: async () => await conn.read(),
      destroy: () => { conn.destroy() },
      discard: () => { conn.destroy() },
    }
  }

  private requestHeaders (path: DistributionPath, rangeHeader: string | undefined, extra?: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = {
      [Header.userAgent]: 'spegel',
      [Header.spegelMirrored]: 'true',
      [Header.accept]: path.kind === 'manifests' ? manifestAccept : '*/*',
    }
    if (rangeHeader !== undefined && path.kind === 'blobs') headers[Header.range] = rangeHeader
    if (this.auth !== undefined) headers[Header.authorization] = this.auth
    if (extra !== undefined) Object.assign(headers, extra)
    return headers
  }

  /** HEAD requests and manifests (small, latency-bound): node:http with a keep-alive agent. */
  private async send (address: string, path: DistributionPath, method: 'GET' | 'HEAD', rangeHeader: string | undefined, signal: AbortSignal, scope: RequestScope): Promise<PeerReply> {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = (this.tls !== undefined ? https : http).request({
        host: address,
        port: this.init.registryPort,
        method,
        path: target(path),
        headers: this.requestHeaders(path, rangeHeader, scope.headers),
        agent: this.agent,
        signal,
      })
      let connected = false
      const connectTimer = setTimeout(() => {
        if (!connected) req.destroy(new ConnectTimeoutError(`connect to ${address} timed out after ${this.init.connectTimeoutMs}ms`))
      }, this.init.connectTimeoutMs)
      let headTimer: NodeJS.Timeout | undefined
      req.once('socket', (socket) => {
        if (!socket.connecting) {
          connected = true
          clearTimeout(connectTimer)
          // A kept-alive socket skips the connect, and so the connect timeout: if the peer died since it was last
          // used, nothing would end the request before the stall timeout. HEADs and manifests are answered in
          // milliseconds, so a reused socket gets a short deadline for the response head.
          headTimer = setTimeout(() => { req.destroy(new StallError(`peer ${address} sent no answer on a kept-alive connection within ${reusedHeadTimeoutMs}ms`)) }, reusedHeadTimeoutMs)
        } else {
          socket.once('connect', () => { connected = true; clearTimeout(connectTimer) })
        }
      })
      // Covers a peer that stalls before or during the body: no byte for stallTimeoutMs ends the request.
      req.setTimeout(this.init.stallTimeoutMs, () => { req.destroy(new StallError(`peer ${address} stalled for ${this.init.stallTimeoutMs}ms`)) })
      req.once('response', (res) => { clearTimeout(connectTimer); clearTimeout(headTimer); resolve(res) })
      req.once('error', (err) => { clearTimeout(connectTimer); clearTimeout(headTimer); reject(err) })
      req.end()
    })
    const chunks = (res as AsyncIterable<Buffer>)[Symbol.asyncIterator]()
    return {
      status: res.statusCode ?? 0,
      header: (name) => { const v = res.headers[name]; return Array.isArray(v) ? v[0] : v },
      read: async () => {
        const r = await chunks.next()
        return r.done === true ? null : { data: r.value, release: noop }
      },
      destroy: () => { res.destroy() },
      discard: () => { res.resume() },
    }
  }

  /**
   * The response body: bytes `window` of the content, read from the first peer from byte 0 to the end; if the stream
   * breaks, continues with a range request to another (or the same) peer from the byte reached. Everything is hashed
   * and the last chunk of the window is withheld until the digest matches, so wrong content is always cut short.
   */
  private async * stream (source: PeerSource, path: DistributionPath, first: Attempt, window: { start: number, end: number }, signal: AbortSignal, scope: RequestScope): AsyncGenerator<BodyChunk> {
    let attempt = first
    let offset = first.start
    const end = first.size - 1
    const hash: Hash = createHash(parseDigest(first.digest).algorithm)
    const contributors = new Set<string>([first.peer.id])
    let pending: BodyChunk | undefined
    let resumes = 0
    try {
      for (;;) {
        try {
          for (;;) {
            const chunk = await attempt.res.read()
            if (chunk === null) break
            const piece = offset + chunk.data.length > end + 1 ? chunk.data.subarray(0, end + 1 - offset) : chunk.data
            hash.update(piece)
            // The part of this piece inside the window, relative to the piece.
            const from = Math.max(window.start - offset, 0)
            const to = Math.min(window.end + 1 - offset, piece.length)
            offset += piece.length
            if (from >= to) {
              chunk.release()
            } else {
              // The new chunk is withheld before the previous one is handed out: if the consumer stops at this
              // yield, `finally` must find it to give its buffer back.
              const out = pending
              pending = { data: from === 0 && to === piece.length ? piece : piece.subarray(from, to), release: chunk.release }
              if (out !== undefined) yield out
            }
            if (offset > end) break
          }
          if (offset <= end) throw new PeerResponseError(`peer ${attempt.peer.id} ended the body at byte ${offset} of ${end + 1}`)
          break
        } catch (err) {
          attempt.res.destroy()
          if (!signal.aborted) this.init.metrics?.peerFailures.inc({ reason: 'stream_broken' })
          if (signal.aborted || path.kind !== 'blobs' || ++resumes > this.init.maxResumes) throw err
          // The same peer may be asked again (it may hold the only copy), but others are tried first.
          source.demote(attempt.peer)
          this.init.logger.info({ peer: attempt.peer.id, offset, err: (err as Error).message, digest: first.digest }, 'peer stream broke, resuming elsewhere')
          attempt = await this.race(source, path, 'GET', `bytes=${offset}-${end}`, signal, true, scope)
          if (attempt.start !== offset || attempt.size !== first.size) throw new PeerResponseError(`peer ${attempt.peer.id} resumed at ${attempt.start} of ${attempt.size}, want ${offset} of ${first.size}`)
          contributors.add(attempt.peer.id)
        }
      }
      if (hash.digest('hex') !== parseDigest(first.digest).hex) {
        for (const id of contributors) this.badPeers.set(id, Date.now() + this.init.badPeerTtlMs)
        this.init.metrics?.verificationFailures.inc()
        this.init.logger.warn({ digest: first.digest, peers: [...contributors] }, 'peer content does not match its digest; response aborted')
        throw new DigestMismatchError(`content from ${[...contributors].join(', ')} does not match ${first.digest}`)
      }
      if (pending !== undefined) {
        const out = pending
        pending = undefined
        yield out
      }
    } finally {
      pending?.release()
      attempt.res.destroy()
      source.close()
    }
  }
}

/**
 * A peer-proxied body. Read as a stream it yields copies (its chunks live in reused buffers); `writeTo` instead
 * writes the buffers straight to an HTTP response, reusing each once the socket has taken it, which is what the
 * registry does for blob GETs. Only one of the two may be used.
 */
export class PeerBody extends Readable {
  private readonly chunks: AsyncGenerator<BodyChunk>
  private readonly cancel: AbortController
  private direct = false

  constructor (chunks: AsyncGenerator<BodyChunk>, cancel: AbortController) {
    super()
    this.chunks = chunks
    this.cancel = cancel
  }

  override _read (): void {
    this.chunks.next().then((r) => {
      if (r.done === true) { this.push(null); return }
      const copy = Buffer.from(r.value.data)
      r.value.release()
      this.push(copy)
    }, (err: unknown) => { this.destroy(err as Error) })
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    this.cancel.abort(finished)
    if (this.direct) { callback(err); return }
    this.chunks.return(undefined).then(() => { callback(err) }, () => { callback(err) })
  }

  /**
   * Writes the whole body to a response whose head is already written, then ends it. On failure the response is
   * destroyed (a cut-short body must not look complete) and the error rethrown. Each chunk goes back to the peer
   * connection once the socket has taken it (or the response has closed): that is the back-pressure, and it keeps
   * the connection's buffers accounted for whatever the client does.
   */
  async writeTo (res: ServerResponse, watch?: WriteWatch): Promise<void> {
    this.direct = true
    let failed: unknown
    const writes = new Set<Promise<void>>()
    const writer = new ResponseWriter(res, watch)
    try {
      for await (const chunk of this.chunks) {
        if (failed !== undefined) { chunk.release(); throw failed }
        // Every write has its handler attached now: it may fail while we wait for the peer's next chunk.
        const write: Promise<void> = writer.write(chunk.data).then(
          () => { chunk.release() },
          (err: unknown) => { chunk.release(); failed ??= err },
        ).finally(() => { writes.delete(write) })
        writes.add(write)
      }
      await Promise.all(writes)
      if (failed !== undefined) throw failed
      await endResponse(res)
    } catch (err) {
      res.destroy()
      this.cancel.abort(finished)
      await Promise.all(writes)
      throw err
    } finally {
      writer.dispose()
      this.destroy()
    }
  }
}

function noop (): void {}

function target (path: DistributionPath): string {
  const ref = path.digest ?? path.tag ?? ''
  const query = path.registry !== '' ? `?ns=${encodeURIComponent(path.registry)}` : ''
  return `/v2/${path.repository}/${path.kind}/${ref}${query}`
}

/** The `reason` label of spegel_peer_failures_total. */
function failureReason (err: unknown): string {
  if (err instanceof ConnectTimeoutError) return 'connect_timeout'
  if (err instanceof StallError) return 'stall'
  if (err instanceof PeerBusyError) return 'busy'
  if (err instanceof PeerResponseError) return 'bad_response'
  return 'connection'
}

function codeOf (path: DistributionPath): 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' {
  return path.kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN'
}

/** Checks a peer's response headers and works out which bytes its body holds. */
function validate (peer: Peer, res: PeerReply, path: DistributionPath, method: 'GET' | 'HEAD', rangeHeader: string | undefined): Omit<Attempt, 'address'> {
  const status = res.status
  const ranged = rangeHeader !== undefined && path.kind === 'blobs'
  if (status === 429 || status === 503) throw new PeerBusyError(`peer ${peer.id} is busy (${status})`)
  if (status !== 200 && status !== 206) throw new PeerResponseError(`peer ${peer.id} answered ${status}`)
  const digestHeader = header(res, Header.dockerContentDigest) ?? path.digest
  if (digestHeader === undefined) throw new PeerResponseError(`peer ${peer.id} sent no Docker-Content-Digest`)
  const digest = parseDigest(digestHeader).value
  if (path.digest !== undefined && digest !== path.digest) throw new PeerResponseError(`peer ${peer.id} sent digest ${digest}, want ${path.digest}`)
  const mediaType = header(res, Header.contentType) ?? MediaType.octetStream
  const length = Number(header(res, Header.contentLength) ?? NaN)
  if (status === 206) {
    if (!ranged) throw new PeerResponseError(`peer ${peer.id} answered 206 to a request without Range`)
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header(res, Header.contentRange) ?? '')
    if (m === null) throw new PeerResponseError(`peer ${peer.id} sent an invalid Content-Range`)
    const start = Number(m[1])
    const end = Number(m[2])
    const size = Number(m[3])
    if (end < start || end >= size || (method === 'GET' && length !== end - start + 1)) throw new PeerResponseError(`peer ${peer.id} sent inconsistent range headers`)
    return { peer, res, start, end, size, digest, mediaType }
  }
  if (ranged) throw new PeerResponseError(`peer ${peer.id} ignored the Range header`)
  if (!Number.isSafeInteger(length) || length < 0) throw new PeerResponseError(`peer ${peer.id} sent no valid Content-Length`)
  return { peer, res, start: 0, end: length - 1, size: length, digest, mediaType }
}

function header (res: PeerReply, name: string): string | undefined {
  return res.header(name)
}
