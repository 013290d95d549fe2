import { setTimeout as sleep } from 'node:timers/promises'
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { Readable } from 'node:stream'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { basicAuthChecker, type BasicAuth } from '../hosts/auth.ts'
import type { RegistryTls } from '../hosts/tls.ts'
import type { Logger } from '../log/index.ts'
import type { Metrics } from '../metrics/index.ts'
import { isManifestMediaType, MediaType } from '../oci/mediatypes.ts'
import { tagReference } from '../oci/reference.ts'
import { NotFoundError, StoreUnavailableError, type ContentStore, type Descriptor, type Download } from '../store/index.ts'
import { InvalidRangeError } from '../oci/errors.ts'
import { RegistryError } from './errors.ts'
import type { RequestFilter } from '../oci/filter.ts'
import { identifier, parseDistributionPath, type DistributionPath } from './path.ts'
import { contentRange, parseRange, resolveRange, type ByteRangeSpec } from './range.ts'
import { ClientGoneError, endResponse, ResponseWriter, type WriteWatch } from './response.ts'
import { sendFileRange, sendStream, smallBodyBytes } from './sendfile.ts'
import { chunkSize } from './buffers.ts'
import type { Lease, Requester, TransferBudget, TransferSource } from './budget.ts'
import { ConnectionLimits, type ConnectionLimitsOptions } from './connections.ts'
import { maxBuffersPerConnection } from './peer-client.ts'
import type { Mirror, RequestRecord } from './types.ts'
import { Header } from '../util/http.ts'
import { defaultStallTimeoutMs } from './constants.ts'

export interface RegistryOptions {
  store: ContentStore
  logger: Logger
  filter?: RequestFilter
  /** Serves content that is not local; without it, absent content is a 404. */
  mirror?: Mirror
  /** Readiness beyond the store's (e.g. the router's). */
  ready?: () => boolean | Promise<boolean>
  /**
   * Lines appended to the `/readyz` body when the query has `verbose` (as Kubernetes components do), e.g. the doctor's
   * findings. Never changes the status code or the plain body.
   */
  readinessDetail?: () => string
  basicAuth?: BasicAuth
  /**
   * `--registry-cert-dir`: serve TLS, and answer /v2/ only to clients whose certificate chains to its CA (this node's
   * containerd and its peers); /readyz and /livez stay open to the kubelet's probes, which present no certificate.
   */
  tls?: RegistryTls
  /** Called once per answered /v2/ request. */
  onRequest?: (record: RequestRecord) => void
  /**
   * What this node shares (the advertiser's keys: digests and tag references of the images of mirrored registries that
   * pass the filters). Local content outside it is not served, to peers or to anyone else, whatever `?ns=` names: an
   * image pulled from a registry that is not mirrored stays on its node. Without it, all local content is served.
   */
  shared?: { has: (key: string) => boolean }
  /** Whether this node's herd has its containerd download `digest` (see HerdMirror.downloading): its download may be served. */
  downloading?: (digest: string) => boolean
  /** A peer asked for a blob or manifest by digest and this node does not hold it (the advertiser re-checks it). */
  onPeerMiss?: (digest: string) => void
  /**
   * --peer-redirect: where a peer serves a blob whole (PeerMirror.locate). With it, this node's containerd is sent
   * there with 307 for a blob GET instead of having it proxied; it throws a 404 RegistryError when no peer holds it.
   */
  locate?: (path: DistributionPath, signal: AbortSignal) => Promise<{ url: string, peer: string }>
  metrics?: Metrics
  /** Bounds the memory blob transfers may hold; without it, transfers are not limited. */
  budget?: TransferBudget
  /** How long a peer asking for a download in progress waits for it to start (default 2 s). */
  inflightStartWaitMs?: number
  /** Limits on idle and open connections (defaults: ConnectionLimits'). */
  connections?: Omit<ConnectionLimitsOptions, 'metrics'>
  /** A client that takes no bytes of a blob for this long is cut off (default 30 s). */
  stallTimeoutMs?: number
  /** A client that takes no bytes for this long stops counting against the budget (default: WriteWatch's). */
  stalledAfterMs?: number
}

const readyTimeoutMs = 2000
/** What one transfer reserves: a local file two chunks (sendfile.ts), a proxied blob a peer connection's buffers and one more for a hedged or resumed request. */
const localReserveBytes = 2 * chunkSize
const proxiedReserveBytes = (maxBuffersPerConnection + 1) * chunkSize

/** Builds the registry HTTP app: the read-only OCI distribution API plus /readyz and /livez. */
export function createRegistryApp (options: RegistryOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    // One debug line per request is logged by our own hook instead.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // A client without a certificate completes the handshake (the probes need it) and is refused per request.
    ...(options.tls !== undefined ? { https: { ca: options.tls.ca, cert: options.tls.serving?.cert ?? options.tls.cert, key: options.tls.serving?.key ?? options.tls.key, requestCert: true, rejectUnauthorized: false } } : {}),
  }) as unknown as FastifyInstance
  const authMatches = options.basicAuth !== undefined ? basicAuthChecker(options.basicAuth) : undefined
  // Bounds idle connections whatever clients do (see connections.ts).
  void new ConnectionLimits(app.server, { ...options.connections, ...(options.metrics !== undefined ? { metrics: options.metrics } : {}) })

  // Body parsing is never needed (the API is read-only); refuse writes before any body is read.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_req, _payload, done) => { done(null, undefined) })

  app.route({
    method: ['GET', 'HEAD'],
    url: '/readyz',
    exposeHeadRoute: false,
    handler: async (req, reply) => {
      const ok = await isReady(options)
      const text = ok ? 'ok' : 'not ready'
      // `verbose` or `verbose=<anything>`, as Kubernetes components take it.
      const verbose = 'verbose' in (req.query as Record<string, unknown>)
      const detail = options.readinessDetail !== undefined && verbose ? `\n${options.readinessDetail()}\n` : ''
      return await reply.code(ok ? 200 : 503).type('text/plain').send(text + detail)
    },
  })
  app.route({
    method: ['GET', 'HEAD'],
    url: '/livez',
    exposeHeadRoute: false,
    handler: async (_req, reply) => await reply.type('text/plain').send('ok'),
  })

  const handler = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const started = performance.now()
    let path: DistributionPath | undefined
    let source: RequestRecord['source'] = 'none'
    let triedPeers = false
    const requester: Requester = req.headers[Header.spegelMirrored] === 'true' ? 'peer' : 'node'
    reply.header(Header.dockerDistributionApiVersion, 'registry/2.0')
    // Listened for before anything is sent: a small response may finish before the handler returns. Only on
    // 'finish': a body cut short was not served, and its bytes do not count.
    reply.raw.once('finish', () => {
      if (path === undefined) return
      const record: RequestRecord = {
        path,
        method: req.method,
        status: reply.raw.statusCode,
        source,
        requester,
        // reply's own headers: the body paths send them with writeHead, which leaves reply.raw.getHeader() empty.
        bytes: Number(reply.getHeader(Header.contentLength) ?? 0),
        durationMs: performance.now() - started,
      }
      if (record.method === 'GET' && (record.status === 200 || record.status === 206) && record.source !== 'none') {
        options.metrics?.servedBytes.inc({ source: record.source }, record.bytes)
      }
      options.onRequest?.(record)
    })
    try {
      if (options.tls !== undefined && (req.raw.socket as TLSSocket).authorized !== true) {
        throw new RegistryError(401, 'UNAUTHORIZED', 'a client certificate signed by the registry\'s CA is required')
      }
      checkAuth(req, authMatches)
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        throw new RegistryError(405, 'UNSUPPORTED', `${req.method} is not supported: this registry is read-only`, { headers: { [Header.allow]: 'GET, HEAD' } })
      }
      path = parseDistributionPath(req.raw.url ?? '')
      if (path === undefined) {
        await reply.code(200).header(Header.contentType, 'application/json').send(Buffer.from('{}'))
        return
      }
      if (options.filter?.rejects(path) === true) throw notFound(path, 'filtered by configuration')
      const method = req.method
      const range = path.kind === 'blobs' ? rangeOf(req) : undefined
      const mirrored = requester === 'peer'
      const local = await findLocal(options.store, path, mirrored, req.log, options.shared)
      if (local !== undefined) {
        source = 'local'
        await serveLocal(options, reply, path, local, method, range, requester)
      } else if (mirrored && path.kind === 'blobs' && path.digest !== undefined && req.headers[Header.spegelInflight] === 'accept' && options.store.download !== undefined) {
        // A peer that takes bytes of a download still in progress (herd protection; Go Spegel never asks this). The
        // download may not have started yet when the peer asks: wait for it, briefly (see waitForDownload).
        if (options.shared !== undefined && !options.shared.has(path.digest) && options.downloading?.(path.digest) !== true) {
          throw notFound(path, 'not found, and not being downloaded for peers')
        }
        const signal = closedSignal(reply)
        const found = await waitForDownload(options.store, path.digest, options.inflightStartWaitMs ?? 2_000, signal)
        if (found === undefined) {
          options.onPeerMiss?.(path.digest)
          throw notFound(path, 'not found, and not being downloaded')
        }
        source = 'local'
        if ('total' in found) await serveDownload(options, reply, path, found, method, range, signal)
        else await serveLocal(options, reply, path, found, method, range, requester)
      } else if (mirrored || options.mirror === undefined) {
        if (mirrored && path.digest !== undefined) options.onPeerMiss?.(path.digest)
        throw notFound(path, 'not found')
      } else if (options.locate !== undefined && method === 'GET' && path.kind === 'blobs' && path.digest !== undefined && range === undefined &&
        (await redirectToHolder(options.locate, reply, path, req))) {
        // Sent the node's containerd to a peer that holds the blob (--peer-redirect): it fetches and verifies it there.
        source = 'peer'
        triedPeers = true
      } else {
        source = 'peer'
        triedPeers = true
        const signal = closedSignal(reply)
        const lease = method === 'GET' && path.kind === 'blobs' ? await reserve(options.budget, reply, proxiedReserveBytes, requester, 'peer', path, signal) : undefined
        const res = await options.mirror.fetch({ path, method, ...(range !== undefined ? { range } : {}), signal, ...(lease !== undefined ? { allowance: lease } : {}) })
        if (path.registry !== '') reply.header(Header.ociNamespace, path.registry)
        const peerPath = path
        reply.raw.once('close', () => {
          req.log.debug({ peer: res.peer, key: identifier(peerPath), bytes: Number(res.headers[Header.contentLength] ?? 0), complete: reply.raw.writableFinished, ms: Math.round(performance.now() - started) }, 'served from peer')
        })
        reply.code(res.status).headers(res.headers)
        if (res.body !== undefined && isDirectBody(res.body)) {
          // Like serveLocal: writing reused buffers straight to the socket costs far less CPU than piping a stream.
          reply.hijack()
          reply.raw.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
          await res.body.writeTo(reply.raw, watchFor(options, lease))
        } else {
          await reply.send(res.body)
        }
      }
    } catch (err) {
      source = 'none'
      if (err instanceof ClientGoneError) {
        // Nobody is left to answer.
        req.log.debug({ err }, 'client went away')
        reply.raw.destroy()
        if (!reply.sent) reply.hijack()
        return
      }
      await sendError(reply, req, toRegistryError(err, path))
    } finally {
      if (triedPeers && path !== undefined && options.metrics !== undefined) {
        const hit = source === 'peer'
        options.metrics.mirrorRequests.inc({ registry: options.metrics.registryLabel(path.registry), cache: hit ? 'hit' : 'miss' })
        if (hit) options.metrics.mirrorLastSuccess.set(Date.now() / 1000)
      }
    }
  }
  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS'], url: '/v2', handler, exposeHeadRoute: false })
  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS'], url: '/v2/*', handler, exposeHeadRoute: false })

  app.setNotFoundHandler(async (req, reply) => {
    await sendError(reply, req, new RegistryError(404, 'NAME_UNKNOWN', 'page not found'))
  })
  app.setErrorHandler(async (err, req, reply) => {
    // Errors fastify raises before our handler (malformed requests, oversized headers, …) get the same JSON shape.
    const e = err as Error & { statusCode?: number }
    const status = e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 600 ? e.statusCode : 500
    req.log.debug({ err }, 'request failed')
    await sendError(reply, req, new RegistryError(status, status === 500 ? 'UNAVAILABLE' : 'NAME_INVALID', status === 500 ? 'internal error' : e.message))
  })
  // Measured on the raw response's close so transfers that bypass fastify's reply (sendFileRange) count too.
  const metrics = options.metrics
  app.addHook('onRequest', async (req, reply) => {
    const url = req.routeOptions.url
    const handler = url === undefined ? 'notfound' : url === '/v2' ? '/v2/*' : url
    const started = performance.now()
    metrics?.httpRequestsInflight.inc({ handler })
    reply.raw.once('close', () => {
      const res = reply.raw
      const status = res.statusCode
      const seconds = (performance.now() - started) / 1000
      if (metrics !== undefined) {
        const labels = { handler, method: req.method, code: String(status) }
        metrics.httpRequestsInflight.dec({ handler })
        metrics.httpRequestDuration.observe(labels, seconds)
        metrics.httpResponseSize.observe(labels, req.method === 'HEAD' ? 0 : Number(res.getHeader(Header.contentLength) ?? 0))
      }
      req.log.debug({ method: req.method, url: req.url, status, ms: Math.round(seconds * 1000), complete: res.writableFinished }, 'request')
    })
  })
  return app
}

/**
 * Answers a blob GET with 307 to a peer that holds the blob whole; false (nothing sent) when no peer does, so the
 * request goes the usual way (a proxied fetch, herd protection, or 404 for the upstream).
 */
async function redirectToHolder (locate: NonNullable<RegistryOptions['locate']>, reply: FastifyReply, path: DistributionPath, req: FastifyRequest): Promise<boolean> {
  let found: { url: string, peer: string }
  try {
    found = await locate(path, closedSignal(reply))
  } catch (err) {
    if (err instanceof RegistryError && err.status === 404) return false
    throw err
  }
  req.log.debug({ peer: found.peer, key: identifier(path), location: found.url }, 'redirected to peer')
  if (path.registry !== '') reply.header(Header.ociNamespace, path.registry)
  await reply.code(307).header(Header.location, found.url).header(Header.contentLength, '0').send()
  return true
}

/** A body that can write itself to the response (PeerMirror's blobs); see PeerBody in mirror.ts. */
interface DirectBody {
  writeTo: (res: ServerResponse, watch?: WriteWatch) => Promise<void>
}

function isDirectBody (body: Readable): body is Readable & DirectBody {
  return typeof (body as Readable & Partial<DirectBody>).writeTo === 'function'
}

async function isReady (options: RegistryOptions): Promise<boolean> {
  try {
    const signal = AbortSignal.timeout(readyTimeoutMs)
    await options.store.listImages({ signal })
    return options.ready === undefined ? true : await options.ready()
  } catch {
    return false
  }
}

/** Refuses a request without the registry's basic-auth credential (when one is set). */
function checkAuth (req: FastifyRequest, matches: ((header: string | undefined) => boolean) | undefined): void {
  if (matches === undefined || matches(req.headers[Header.authorization])) return
  throw new RegistryError(401, 'UNAUTHORIZED', 'invalid credentials', { headers: { [Header.wwwAuthenticate]: 'Basic realm="spegel"' } })
}

/** Aborts when the response closes before it finished: the client went away, so stop waiting or asking peers. */
function closedSignal (reply: FastifyReply): AbortSignal {
  const ac = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) ac.abort(clientGone) })
  return ac.signal
}
/** The abort reason of a request whose client went away (shared: see `finished` in mirror.ts). */
const clientGone = new ClientGoneError()

/**
 * How a blob transfer watches its client: the stall timeout, and its lease (if any) stops counting against the budget
 * while the client takes nothing.
 */
function watchFor (options: RegistryOptions, lease: Lease | undefined): WriteWatch {
  return {
    stallTimeoutMs: options.stallTimeoutMs ?? defaultStallTimeoutMs,
    ...(options.stalledAfterMs !== undefined ? { stalledAfterMs: options.stalledAfterMs } : {}),
    ...(lease !== undefined ? { onStalled: lease.stalled } : {}),
    onTimeout: () => { options.metrics?.transferStallTimeouts.inc() },
  }
}

/**
 * Reserves transfer memory for the response, released when the response closes. Without room: a peer is told 429
 * (it asks another holder at once), this node's containerd 404 (it pulls from the upstream) after a short wait.
 */
async function reserve (budget: TransferBudget | undefined, reply: FastifyReply, bytes: number, requester: Requester, source: TransferSource, path: DistributionPath, signal: AbortSignal): Promise<Lease | undefined> {
  if (budget === undefined) return undefined
  const lease = await budget.admit(bytes, requester, source, signal)
  if (lease === undefined) {
    if (signal.aborted) throw new ClientGoneError()
    if (requester === 'peer') {
      throw new RegistryError(429, 'TOOMANYREQUESTS', 'too many transfers in progress on this node; ask another peer', { headers: { [Header.retryAfter]: '1' } })
    }
    throw notFound(path, 'cannot be served now: too many transfers in progress; pull it from the registry')
  }
  if (reply.raw.closed) lease.release()
  else reply.raw.once('close', lease.release)
  return lease
}

/**
 * The request's byte range. A Range header this registry does not serve (another unit, several ranges) is ignored
 * and the whole blob is sent with 200, as RFC 9110 allows and the OCI spec expects; a malformed `bytes=` range, or
 * one beyond the blob (see serveLocal and PeerMirror.fetch), is refused with 416.
 */
function rangeOf (req: FastifyRequest): ByteRangeSpec | undefined {
  const header = req.headers[Header.range]
  if (header === undefined) return undefined
  try {
    return parseRange(header)
  } catch (err) {
    if (!(err instanceof InvalidRangeError)) throw err
    throw new RegistryError(416, 'SIZE_INVALID', `invalid range: ${err.message}`)
  }
}

/**
 * Looks the request up in the local store. Returns undefined when it is not here, or not shared (see
 * RegistryOptions.shared), or the store cannot be asked (unless the request came from a peer: then the store's state
 * is the answer).
 */
async function findLocal (store: ContentStore, path: DistributionPath, mirrored: boolean, log: FastifyRequest['log'], shared: RegistryOptions['shared']): Promise<Descriptor | undefined> {
  try {
    let digest = path.digest
    if (digest === undefined) {
      if (shared !== undefined && path.registry !== '' && !shared.has(tagReference(path.registry, path.repository, path.tag ?? ''))) return undefined
      digest = await resolveTag(store, path, shared)
    } else if (shared !== undefined && !shared.has(digest)) {
      return undefined
    }
    return await store.descriptor(digest)
  } catch (err) {
    if (err instanceof NotFoundError) return undefined
    if (err instanceof StoreUnavailableError && !mirrored) {
      log.warn({ err }, 'store unavailable, trying peers')
      return undefined
    }
    throw err
  }
}

/** Tags are qualified by `ns`; without it (skopeo, curl), the tag is looked up in every registry the store holds. */
async function resolveTag (store: ContentStore, path: DistributionPath, shared: RegistryOptions['shared']): Promise<string> {
  const tag = path.tag ?? ''
  if (path.registry !== '') return await store.resolve(tagReference(path.registry, path.repository, tag))
  const matches = new Set<string>()
  for (const image of await store.listImages()) {
    if (image.repository !== path.repository || image.tag !== tag) continue
    if (shared !== undefined && !shared.has(tagReference(image.registry, image.repository, tag))) continue
    matches.add(image.digest)
  }
  if (matches.size === 1) return [...matches][0] as string
  if (matches.size === 0) throw new NotFoundError(`no registry holds ${path.repository}:${tag}`)
  throw new RegistryError(404, 'MANIFEST_UNKNOWN', `${path.repository}:${tag} exists in several registries with different digests; add ?ns=<registry>`)
}

async function serveLocal (
  options: RegistryOptions,
  reply: FastifyReply,
  path: DistributionPath,
  desc: Descriptor,
  method: 'GET' | 'HEAD',
  rangeSpec: ByteRangeSpec | undefined,
  requester: Requester,
): Promise<void> {
  const store = options.store
  if (path.kind === 'manifests' && !isManifestMediaType(desc.mediaType)) {
    throw new RegistryError(404, 'MANIFEST_UNKNOWN', `${desc.digest} is not a manifest (${desc.mediaType})`)
  }
  reply.header(Header.dockerContentDigest, desc.digest)
  if (path.registry !== '') reply.header(Header.ociNamespace, path.registry)
  let start = 0
  let end = desc.size - 1
  if (path.kind === 'blobs') {
    reply.header(Header.acceptRanges, 'bytes')
    if (rangeSpec !== undefined) {
      try {
        ({ start, end } = resolveRange(rangeSpec, desc.size))
      } catch (err) {
        if (!(err instanceof InvalidRangeError)) throw err
        throw new RegistryError(416, 'SIZE_INVALID', `range not satisfiable: ${err.message}`, { headers: { [Header.contentRange]: `bytes */${desc.size}` } })
      }
      reply.code(206).header(Header.contentRange, contentRange({ start, end }, desc.size))
    }
  }
  reply.header(Header.contentType, rangeSpec !== undefined ? MediaType.octetStream : desc.mediaType)
  reply.header(Header.contentLength, String(end - start + 1))
  if (method === 'HEAD' || desc.size === 0) {
    await reply.send()
    return
  }
  const lease = end - start + 1 > smallBodyBytes ? await reserve(options.budget, reply, localReserveBytes, requester, 'local', path, closedSignal(reply)) : undefined
  const file = await store.openFile?.(desc.digest)
  if (file !== undefined) {
    try {
      reply.hijack()
      reply.raw.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
      await sendFileRange(file, start, end, reply.raw, watchFor(options, lease), lease)
    } finally {
      await file.close()
    }
    return
  }
  let body: Readable
  try {
    body = await store.open(desc.digest, { start, end })
  } catch (err) {
    if (err instanceof NotFoundError) throw notFound(path, 'removed while being served')
    throw err
  }
  reply.hijack()
  reply.raw.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
  await sendStream(body, reply.raw, watchFor(options, lease))
}

/**
 * Waits up to `waitMs` for this node's containerd to start downloading `digest` (or to have it complete). A node
 * that claimed a blob answers its containerd 404 a moment before the download starts, and its peers may ask in that
 * moment; but the download may also never start (that containerd's download slots are taken, or it found the blob
 * elsewhere), so the wait is short: the asking peer then downloads the blob itself.
 */
async function waitForDownload (store: ContentStore, digest: string, waitMs: number, signal: AbortSignal): Promise<Download | Descriptor | undefined> {
  const deadline = performance.now() + waitMs
  for (;;) {
    const download = await store.download?.(digest)
    if (download !== undefined) return download
    try {
      return await store.descriptor(digest)
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err
    }
    if (performance.now() >= deadline || signal.aborted) return undefined
    await sleep(25, undefined, { signal }).catch(() => {})
  }
}

/** Streams a blob while this node's containerd downloads it (the whole blob, or from a byte on: a resume). */
async function serveDownload (options: RegistryOptions, reply: FastifyReply, path: DistributionPath, download: Download, method: 'GET' | 'HEAD', rangeSpec: ByteRangeSpec | undefined, signal: AbortSignal): Promise<void> {
  let start = 0
  if (rangeSpec !== undefined) {
    try {
      start = resolveRange(rangeSpec, download.total).start
    } catch (err) {
      if (!(err instanceof InvalidRangeError)) throw err
      throw new RegistryError(416, 'SIZE_INVALID', `range not satisfiable: ${err.message}`, { headers: { [Header.contentRange]: `bytes */${download.total}` } })
    }
    // Only ranges to the end are served from a download (what a resume asks for).
    reply.code(206).header(Header.contentRange, contentRange({ start, end: download.total - 1 }, download.total))
  }
  reply.header(Header.dockerContentDigest, download.digest)
  if (path.registry !== '') reply.header(Header.ociNamespace, path.registry)
  reply.header(Header.spegelInflight, 'true')
  reply.header(Header.contentType, MediaType.octetStream)
  reply.header(Header.contentLength, String(download.total - start))
  if (method === 'HEAD') {
    await reply.send()
    return
  }
  const lease = await reserve(options.budget, reply, localReserveBytes, 'peer', 'local', path, signal)
  reply.hijack()
  reply.raw.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders)
  const writer = new ResponseWriter(reply.raw, watchFor(options, lease))
  try {
    let offset = 0
    options.metrics?.inflightServed.inc()
    for await (const chunk of download.read({ signal })) {
      const from = Math.max(0, start - offset)
      offset += chunk.length
      if (from < chunk.length) {
        await writer.write(from === 0 ? chunk : chunk.subarray(from))
        options.metrics?.inflightServedBytes.inc(chunk.length - from)
      }
    }
    await endResponse(reply.raw)
  } catch (err) {
    // Cut short: the peer sees a broken body and resumes elsewhere or gives up; it never takes it for complete.
    reply.raw.destroy()
    if (!(err instanceof ClientGoneError) && !signal.aborted) options.logger.info({ err, digest: download.digest }, 'serving a download in progress ended early')
  } finally {
    writer.dispose()
  }
}

function notFound (path: DistributionPath, why: string): RegistryError {
  const what = path.kind === 'manifests' ? 'manifest' : 'blob'
  return new RegistryError(404, path.kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `${what} ${identifier(path)} ${why}`)
}

function toRegistryError (err: unknown, path: DistributionPath | undefined): RegistryError {
  if (err instanceof RegistryError) return err
  if (err instanceof NotFoundError && path !== undefined) return notFound(path, 'not found')
  if (err instanceof StoreUnavailableError) return new RegistryError(503, 'UNAVAILABLE', 'content store unavailable', { cause: err })
  return new RegistryError(500, 'UNAVAILABLE', 'internal error', { cause: err })
}

async function sendError (reply: FastifyReply, req: FastifyRequest, err: RegistryError): Promise<void> {
  if (reply.sent || reply.raw.headersSent) {
    // A client hanging up mid-body is routine (containerd cancels, hedging peers cancel the loser, pods go away).
    if (err.cause instanceof ClientGoneError) req.log.debug({ err: err.cause }, 'client went away mid-response')
    else req.log.warn({ err }, 'error after the response started')
    reply.raw.destroy()
    return
  }
  if (err.status >= 500) req.log.error({ err: err.cause ?? err }, err.message)
  const body = Buffer.from(err.body())
  reply.removeHeader(Header.contentRange)
  reply.removeHeader(Header.acceptRanges)
  reply.removeHeader(Header.dockerContentDigest)
  reply.removeHeader(Header.ociNamespace)
  reply.code(err.status).headers(err.headers)
    .header(Header.contentType, 'application/json')
    .header(Header.contentLength, String(body.byteLength))
  await reply.send(req.method === 'HEAD' ? undefined : body)
}
