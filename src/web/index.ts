import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify'
import type { AdvertisedImage } from '../advertise/index.ts'
import type { DoctorReport } from '../doctor/index.ts'
import type { Logger } from '../log/index.ts'
import type { Metrics } from '../metrics/index.ts'
import type { HerdEvent } from '../registry/herd.ts'
import type { PeerInfo } from '../routing/types.ts'
import { InvalidImageError, parseImageWithDefaults, type MeasureResult } from './measure.ts'
import { renderError, renderMeasure, renderPage, renderStats, type StatsView } from './page.ts'
import { compileStringQuery, type StringQuerySchema } from './query.ts'
import type { RecentRequests } from './recent.ts'
import { Header } from '../util/http.ts'

export { escapeHtml, formatBytes, formatDuration } from './format.ts'
export { InvalidImageError, measurePull, parseImageWithDefaults } from './measure.ts'
export type { MeasureOptions, MeasureResult, MeasuredPeer, PulledItem } from './measure.ts'
export { RecentRequests } from './recent.ts'
export type { RecentRequest } from './recent.ts'

/** What the debug page shows; each is read on every request, so the page is always current. */
export interface DebugWebSources {
  /** Multiaddrs this node announces. */
  addresses: () => string[]
  peers: () => PeerInfo[]
  routerStatus?: () => { ready: boolean, routingTableSize: number, lastBootstrapError?: string }
  advertised: () => { images: AdvertisedImage[], keys: number }
  recent: RecentRequests
  doctor?: () => DoctorReport | undefined
  /** The latest blobs nobody held (herd protection), newest first. */
  herd?: () => HerdEvent[]
  /** Looks an image up in the DHT and pulls it through this node's registry. */
  measure?: (image: string, options: { signal: AbortSignal }) => Promise<MeasureResult>
  /**
   * Image names, tags and digests only for callers on loopback (`kubectl port-forward` arrives there); anyone else who
   * reaches the metrics port sees them replaced by `hidden`, counts intact, and cannot measure a pull. On with the
   * registry's mutual TLS, so the metrics port does not list what the registry port keeps to members.
   */
  namesForLoopbackOnly?: boolean
}

export interface MetricsAppOptions {
  metrics: Metrics
  logger: Logger
  /** This node's libp2p peer id, served at /debug/web/metadata as Spegel does. */
  peerId: string
  /** Mounts the debug page under /debug/web/ (`--debug-web-enabled`). */
  debugWeb?: DebugWebSources
}

const html = 'text/html; charset=utf-8'
/** What replaces a name or digest for callers who may not see it (see DebugWebSources.namesForLoopbackOnly). */
const hidden = 'hidden'

function isLoopback (address: string | undefined): boolean {
  return address !== undefined && (address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.'))
}

/**
 * The metrics port: `/metrics` (Prometheus), and with the debug page enabled `/debug/web/` (page), `/debug/web/stats`
 * (its refreshable part), `/debug/web/measure?image=` (measure a pull), `/debug/web/metadata` (`{"libp2p":{"id"}}`)
 * and `/debug/web/status.json` (the page's data, for scripts). Debug routes are measured in the http_* metrics under
 * their route pattern, like Spegel's instrumented mux.
 */
export function createMetricsApp (options: MetricsAppOptions): FastifyInstance {
  const { metrics } = options
  const app = Fastify({ loggerInstance: options.logger as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), forceCloseConnections: true })
  // Instead of Ajv, which would cost the daemon more heap than the whole debug page.
  app.setValidatorCompiler(compileStringQuery)
  app.get('/metrics', async (_req, reply) => {
    const body = await metrics.registry.metrics()
    return await reply.type(metrics.registry.contentType).send(body)
  })
  const web = options.debugWeb
  if (web === undefined) return app

  app.addHook('onRequest', async (req, reply) => {
    const url = req.routeOptions.url
    if (url === undefined || !url.startsWith('/debug/web')) return
    const handler = url === '/debug/web' ? '/debug/web/*' : url
    const started = performance.now()
    metrics.httpRequestsInflight.inc({ handler })
    reply.raw.once('close', () => {
      const labels = { handler, method: req.method, code: String(reply.raw.statusCode) }
      metrics.httpRequestsInflight.dec({ handler })
      metrics.httpRequestDuration.observe(labels, (performance.now() - started) / 1000)
      metrics.httpResponseSize.observe(labels, Number(reply.getHeader(Header.contentLength) ?? reply.raw.getHeader(Header.contentLength) ?? 0))
    })
  })

  const view = async (req: FastifyRequest): Promise<StatsView> => {
    const v = await fullView()
    if (web.namesForLoopbackOnly !== true || isLoopback(req.socket.remoteAddress)) return v
    return {
      ...v,
      images: v.images.map((i) => ({ ...i, name: hidden, digest: hidden, ...(i.tag !== undefined ? { tag: hidden } : {}), digests: i.digests.map(() => hidden) })),
      recent: v.recent.map((r) => ({ ...r, repository: hidden, reference: hidden })),
      ...(v.herd !== undefined ? { herd: v.herd.map((h) => ({ ...h, digest: hidden })) } : {}),
    }
  }
  const fullView = async (): Promise<StatsView> => {
    const advertised = web.advertised()
    const last = (await metrics.mirrorLastSuccess.get()).values[0]?.value
    const doctor = web.doctor?.()
    const herd = web.herd?.()
    return {
      peerId: options.peerId,
      addresses: web.addresses(),
      ...(web.routerStatus !== undefined ? { router: web.routerStatus() } : {}),
      peers: web.peers(),
      images: advertised.images,
      advertisedKeys: advertised.keys,
      ...(last !== undefined && last > 0 ? { lastMirrorSuccess: last } : {}),
      recent: web.recent.list(),
      ...(doctor !== undefined ? { doctor } : {}),
      ...(herd !== undefined ? { herd } : {}),
      now: Date.now(),
    }
  }

  app.get('/debug/web/metadata', async (_req, reply) => await reply.send({ libp2p: { id: options.peerId } }))
  app.get('/debug/web', async (_req, reply) => await reply.redirect('/debug/web/'))
  app.get('/debug/web/*', async (req, reply) => await reply.type(html).header(Header.cacheControl, 'no-store').send(renderPage(await view(req))))
  app.get('/debug/web/stats', async (req, reply) => await reply.type(html).header(Header.cacheControl, 'no-store').send(renderStats(await view(req))))
  app.get('/debug/web/status.json', async (req, reply) => {
    const v = await view(req)
    return await reply.header(Header.cacheControl, 'no-store').send({
      libp2p: { id: v.peerId, addresses: v.addresses, ...(v.router !== undefined ? { router: v.router } : {}) },
      peers: v.peers,
      images: v.images,
      advertisedKeys: v.advertisedKeys,
      lastMirrorSuccess: v.lastMirrorSuccess ?? null,
      recentRequests: v.recent,
      doctor: v.doctor ?? null,
      herd: v.herd ?? null,
    })
  })
  app.get<{ Querystring: { image?: string } }>('/debug/web/measure', {
    schema: { querystring: { type: 'object', properties: { image: { type: 'string', maxLength: 1024 } } } satisfies StringQuerySchema },
  }, async (req, reply) => {
    const image = req.query.image ?? ''
    try {
      parseImageWithDefaults(image)
    } catch (err) {
      return await reply.code(400).type(html).send(renderError(`invalid image: ${(err as Error).message}`))
    }
    if (web.measure === undefined) return await reply.code(501).type(html).send(renderError('measuring is not available on this node'))
    if (web.namesForLoopbackOnly === true && !isLoopback(req.socket.remoteAddress)) {
      return await reply.code(403).type(html).send(renderError('measuring a pull is for callers on loopback only (kubectl port-forward)'))
    }
    const ac = new AbortController()
    // The response closing before it was written means the browser went away.
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) ac.abort() })
    try {
      const result = await web.measure(image, { signal: ac.signal })
      return await reply.type(html).header(Header.cacheControl, 'no-store').send(renderMeasure(result))
    } catch (err) {
      if (err instanceof InvalidImageError) return await reply.code(400).type(html).send(renderError(`invalid image: ${err.message}`))
      req.log.warn({ err, image }, 'measure failed')
      return await reply.code(500).type(html).send(renderError(`measure failed: ${(err as Error).message}`))
    }
  })
  app.setErrorHandler(async (err, _req, reply) => {
    const status = (err as { statusCode?: number }).statusCode ?? 500
    return await reply.code(status).type(html).send(renderError((err as Error).message))
  })
  return app
}
