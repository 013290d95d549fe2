import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { ContainerdStore } from '../containerd/index.ts'
import { readBasicAuth } from '../containerd/hosts.ts'
import { Metrics } from '../metrics/index.ts'
import { createRegistryApp, RequestFilter } from '../registry/index.ts'
import { listenOptions, parseListenAddress } from '../util/addr.ts'
import { ExitCode, list, str, type CommandContext } from './run.ts'

/** Where Spegel's chart mounts the optional basic-auth secret. */
export const basicAuthDir = '/etc/secrets/basic-auth'

/** `spegel registry`: serve the node's containerd content to containerd and to peers until SIGTERM. */
export async function registryCommand (ctx: CommandContext): Promise<number> {
  const { values, logger, signal } = ctx
  const registryAddr = parseListenAddress(str(values, 'registry-addr'))
  const metricsAddr = parseListenAddress(str(values, 'metrics-addr'))
  const filter = new RequestFilter({ mirroredRegistries: list(values, 'mirrored-registries'), registryFilters: list(values, 'registry-filters') })
  const basicAuth = await readBasicAuth(ctx.env.SPEGEL_BASIC_AUTH_DIR ?? basicAuthDir)

  const metrics = new Metrics()
  const store = new ContainerdStore({
    socket: str(values, 'containerd-sock'),
    namespace: str(values, 'containerd-namespace'),
    contentPath: str(values, 'containerd-content-path'),
    logger: logger.child({ component: 'containerd' }),
  })
  const servers: FastifyInstance[] = []
  try {
    const registry = createRegistryApp({
      store,
      logger: logger.child({ component: 'registry' }),
      filter,
      metrics,
      ...(basicAuth !== undefined ? { basicAuth } : {}),
    })
    servers.push(registry)
    const metricsApp = createMetricsApp(metrics, logger.child({ component: 'metrics' }) as FastifyBaseLogger)
    servers.push(metricsApp)

    await registry.listen(listenOptions(registryAddr))
    await metricsApp.listen(listenOptions(metricsAddr))
    logger.info({ registry: str(values, 'registry-addr'), metrics: str(values, 'metrics-addr') }, 'running')

    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve()
      else signal.addEventListener('abort', () => { resolve() }, { once: true })
    })
    return ExitCode.ok
  } finally {
    // Stop accepting, let in-flight transfers finish, then release containerd.
    await Promise.allSettled(servers.map(async (s) => { await s.close() }))
    await store.close()
    logger.info('exit gracefully')
  }
}

function createMetricsApp (metrics: Metrics, logger: FastifyBaseLogger): FastifyInstance {
  const app = Fastify({ loggerInstance: logger, disableRequestLogging: true, forceCloseConnections: true })
  app.get('/metrics', async (_req, reply) => {
    const body = await metrics.registry.metrics()
    return await reply.type(metrics.registry.contentType).send(body)
  })
  return app
}
