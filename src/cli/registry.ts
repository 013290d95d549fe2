import { readFile } from 'node:fs/promises'
import { networkInterfaces } from 'node:os'
import type { FastifyInstance } from 'fastify'
import { Advertiser } from '../advertise/index.ts'
import { ContainerdClient, ContainerdStore } from '../containerd/index.ts'
import { basicAuthFromEnv, issueServingCertificate, readRegistryTls, readUpstreamAccess } from '../hosts/index.ts'
import { CriClient, Doctor, readyzDetail, runDoctorLoop } from '../doctor/index.ts'
import { Metrics } from '../metrics/index.ts'
import { RequestFilter } from '../oci/filter.ts'
import { createRegistryApp } from '../registry/index.ts'
import { defaultTransferBudget, TransferBudget } from '../registry/budget.ts'
import { InvalidSizeError, parseByteSize } from '../util/size.ts'
import { PeerMirror } from '../registry/mirror.ts'
import { HerdMirror } from '../registry/herd.ts'
import { TagConfirmer } from '../registry/upstream.ts'
import type { DistributionPath } from '../registry/path.ts'
import { parseMirroredRegistries } from '../hosts/url.ts'
import { DnsBootstrapper, HttpBootstrapper, StaticBootstrapper, type Bootstrapper } from '../routing/bootstrap.ts'
import { Libp2pRouter } from '../routing/libp2p.ts'
import { parseSwarmKey, SwarmKeyError } from '../routing/psk.ts'
import type { Router, RouterIntrospection } from '../routing/types.ts'
import type { Logger } from '../log/index.ts'
import { listenOptions, parseListenAddress } from '../util/addr.ts'
import { createMetricsApp, measurePull, RecentRequests } from '../web/index.ts'
import { ExitCode, type CommandContext } from './context.ts'
import type { RegistryConfig } from './spec.ts'

/** A registry flag combination that cannot work. */
export class ConfigurationError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigurationError'
  }
}

/** The registry flags that choose and configure the bootstrapper. */
export type BootstrapConfig = Pick<RegistryConfig,
  'bootstrapKind' | 'dnsBootstrapDomain' | 'httpBootstrapUrl' | 'httpBootstrapPeer' | 'httpBootstrapAddr' | 'httpBootstrapCertDir' | 'staticBootstrapPeers'>

/** Builds the bootstrapper `--bootstrap-kind` names (Spegel refuses to start without one). */
export function bootstrapperFrom (config: BootstrapConfig): Bootstrapper {
  switch (config.bootstrapKind) {
    case 'dns': {
      const domain = config.dnsBootstrapDomain
      if (domain === '') throw new ConfigurationError('--bootstrap-kind=dns needs --dns-bootstrap-domain')
      return new DnsBootstrapper({ domain })
    }
    case 'http': {
      const init: ConstructorParameters<typeof HttpBootstrapper>[0] = {}
      if (config.httpBootstrapUrl !== '') init.url = config.httpBootstrapUrl
      if (config.httpBootstrapPeer !== '') init.peer = config.httpBootstrapPeer
      if (config.httpBootstrapAddr !== '') init.listenAddr = config.httpBootstrapAddr
      if (config.httpBootstrapCertDir !== '') init.certDir = config.httpBootstrapCertDir
      return new HttpBootstrapper(init)
    }
    case 'static':
      return new StaticBootstrapper(config.staticBootstrapPeers)
    default:
      throw new ConfigurationError('unknown bootstrap kind: set --bootstrap-kind to dns, http or static')
  }
}

/** Bytes of the transfer budget: `auto` derives it from the memory limit of the container (cgroup) the process runs in. */
export function transferMemory (value: string, limit = process.constrainedMemory()): number {
  if (value === '' || value === 'auto') return defaultTransferBudget(limit)
  try {
    const bytes = parseByteSize(value)
    if (bytes < 1024 * 1024) throw new ConfigurationError(`--transfer-memory=${value} is below 1Mi: not even one transfer would fit`)
    return bytes
  } catch (err) {
    if (err instanceof InvalidSizeError) throw new ConfigurationError(`--transfer-memory: ${err.message}`)
    throw err
  }
}

/** The key of `--router-psk-file`, or undefined without one; a file that is missing or not a swarm key is refused. */
export async function routerPsk (path: string): Promise<Uint8Array | undefined> {
  if (path === '') return undefined
  let file: Buffer
  try {
    file = await readFile(path)
  } catch (err) {
    throw new ConfigurationError(`--router-psk-file=${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`)
  }
  try {
    return parseSwarmKey(file)
  } catch (err) {
    if (err instanceof SwarmKeyError) throw new ConfigurationError(`--router-psk-file=${path} is not a swarm key file: ${err.message} (make one with: printf '/key/swarm/psk/1.0.0/\\n/base16/\\n%s\\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')")`)
    throw err
  }
}

/** `spegel registry`: serve the node's containerd content to containerd and to peers until SIGTERM. */
export async function registryCommand (ctx: CommandContext<RegistryConfig>): Promise<number> {
  const { config, logger, signal } = ctx
  const registryAddr = parseListenAddress(config.registryAddr)
  const metricsAddr = parseListenAddress(config.metricsAddr)
  const filter = await RequestFilter.create({ mirroredRegistries: config.mirroredRegistries, registryFilters: config.registryFilters })
  const bootstrapper = bootstrapperFrom(config)
  const transferBytes = transferMemory(config.transferMemory)
  const psk = await routerPsk(config.routerPskFile)
  const basicAuth = await basicAuthFromEnv(ctx.env)
  const tls = await readRegistryTls(config.registryCertDir)
  if (tls?.caKey !== undefined) {
    const ips = [...new Set([...config.registryCertIps, ...interfaceIps()])]
    tls.serving = issueServingCertificate({ cert: tls.ca, key: tls.caKey }, { ips, dnsNames: ['localhost'] })
    logger.info({ ips }, 'issued the registry\'s serving certificate')
  }

  const metrics = new Metrics()
  // Nothing a client or a peer does may end the daemon. A rejection nobody handled is a bug: it is logged and counted
  // (spegel_unhandled_errors_total) instead of taking every transfer on this node down with it.
  const onUnhandled = (reason: unknown): void => {
    metrics.unhandledErrors.inc()
    logger.error({ err: reason }, 'unhandled promise rejection (a bug; the daemon keeps running)')
  }
  process.on('unhandledRejection', onUnhandled)
  const client = new ContainerdClient({ socket: config.containerdSock, namespace: config.containerdNamespace })
  // Content confirmed in the last 2 s is not asked for again (a HEAD then a GET, a peer after containerd), while the
  // advertiser follows store.changes (which carries containerd's deletions to the store).
  const store = new ContainerdStore({ client, contentPath: config.containerdContentPath, logger: logger.child({ component: 'containerd' }), confirmedTtlMs: 2_000 })
  // One connection to containerd for both APIs.
  const cri = new CriClient({ channel: client.channel })
  // Requests from this node's containerd (not peers'): the doctor's proof that containerd uses the mirror at all.
  let nodeRequests = 0
  const doctor = new Doctor({ store, cri, metrics, plugins: async (options) => await client.plugins([], options), mirrorRequests: () => nodeRequests }, {
    registryConfigPath: config.containerdRegistryConfigPath,
    mirroredRegistries: config.mirroredRegistries,
    namespace: config.containerdNamespace,
    // Our chart mounts the hosts directory into the registry container (read-only); Spegel's chart does not.
    hostsOptional: true,
  })
  const recent = new RecentRequests(100)
  const servers: FastifyInstance[] = []
  const background = new AbortController()
  let router: (Router & RouterIntrospection) | undefined
  let mirror: PeerMirror | undefined
  let herd: HerdMirror | undefined
  let advertising: Promise<void> | undefined
  let doctoring: Promise<void> | undefined
  try {
    const dataDir = config.dataDir
    router = await Libp2pRouter.create({
      bootstrapper,
      logger,
      listenAddr: config.routerAddr,
      ...(dataDir !== '' ? { dataDir } : {}),
      ...(psk !== undefined ? { psk } : {}),
      // Only for tests on one host: production peers can never reach a loopback address.
      allowLoopback: ctx.env.SPEGEL_ALLOW_LOOPBACK === 'true',
    })
    const routerRef = router
    mirror = new PeerMirror({
      router,
      registryPort: registryAddr.port,
      logger: logger.child({ component: 'mirror' }),
      resolveTimeoutMs: config.mirrorResolveTimeoutMs,
      resolveRetries: config.mirrorResolveRetries,
      metrics,
      ...(basicAuth !== undefined ? { basicAuth } : {}),
      ...(tls !== undefined ? { tls } : {}),
      ...(config.confirmTags
        ? {
            tags: new TagConfirmer({
              registries: parseMirroredRegistries(config.mirroredRegistries),
              // The upstream is asked as this node's containerd reaches it (the chart mounts the hosts directory).
              access: async (registry) => await readUpstreamAccess(config.containerdRegistryConfigPath, registry),
            }),
          }
        : {}),
    })
    const mirrorRef = mirror
    const advertiser = new Advertiser({ store, router, logger: logger.child({ component: 'advertiser' }), filter, metrics, changes: (signal) => store.changes(signal) })
    advertising = advertiser.run(background.signal)

    const budget = new TransferBudget({ bytes: transferBytes, metrics })
    herd = config.herdProtection ? new HerdMirror({ mirror, router, logger: logger.child({ component: 'herd' }), metrics }) : undefined
    const registry = createRegistryApp({
      store,
      budget,
      stallTimeoutMs: config.stallTimeoutMs,
      logger: logger.child({ component: 'registry' }),
      filter,
      metrics,
      mirror: herd ?? mirror,
      // What the node serves is what it shares: not ready until the advertiser knows what that is.
      ready: () => routerRef.ready() && advertiser.ready,
      readinessDetail: () => readyzDetail(doctor.lastReport),
      ...(basicAuth !== undefined ? { basicAuth } : {}),
      ...(tls !== undefined ? { tls } : {}),
      shared: advertiser,
      ...(herd !== undefined ? { downloading: (digest: string) => herd?.downloading(digest) === true } : {}),
      onPeerMiss: (digest) => { advertiser.missing(digest) },
      // containerd drops the Authorization header on a redirect to another host: with basic auth, always proxy.
      ...(config.peerRedirect && basicAuth === undefined ? { locate: async (path: DistributionPath, signal: AbortSignal) => await mirrorRef.locate(path, signal) } : {}),
      onRequest: (record) => {
        recent.record(record)
        if (record.requester === 'node') nodeRequests++
      },
    })
    servers.push(registry)
    doctoring = runDoctorLoop(doctor, logger.child({ component: 'doctor' }), background.signal, { changes: (signal) => store.changes(signal) })
    const registryUrl = `http://${registryAddr.host === '' || registryAddr.host === '0.0.0.0' || registryAddr.host === '::' ? '127.0.0.1' : registryAddr.host.includes(':') ? `[${registryAddr.host}]` : registryAddr.host}:${registryAddr.port}`
    const metricsApp = createMetricsApp({
      metrics,
      logger: logger.child({ component: 'metrics' }),
      peerId: router.peerId,
      ...(config.debugWebEnabled
        ? {
            debugWeb: {
              addresses: () => routerRef.multiaddrs(),
              peers: () => routerRef.peers(),
              routerStatus: () => routerRef.status(),
              advertised: () => advertiser.snapshot(),
              recent,
              doctor: () => doctor.lastReport,
              // Without herd protection the page leaves the section out.
              ...(herd !== undefined ? { herd: () => herd?.recent() ?? [] } : {}),
              namesForLoopbackOnly: tls !== undefined,
              measure: async (image, options) => {
                // The page's own pull goes through this registry like containerd's, which with TLS wants a client certificate.
                if (tls !== undefined) throw new Error('measuring a pull is not available with --registry-cert-dir')
                return await measurePull({ router: routerRef, store, registryUrl }, image, options)
              },
            },
          }
        : {}),
    })
    servers.push(metricsApp)

    await registry.listen(listenOptions(registryAddr))
    await metricsApp.listen(listenOptions(metricsAddr))
    logger.info({ transferMemory: transferBytes, memoryLimit: process.constrainedMemory() || undefined }, 'transfer budget')
    logger.info({ registry: config.registryAddr, metrics: config.metricsAddr, router: config.routerAddr, peerId: router.peerId }, 'running')

    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve()
      else signal.addEventListener('abort', () => { resolve() }, { once: true })
    })
    return ExitCode.ok
  } finally {
    // Leave the DHT first so peers stop being sent here, then let in-flight transfers finish (up to --drain-timeout),
    // then release containerd.
    background.abort()
    await advertising
    await doctoring
    await router?.close().catch((err: unknown) => { logger.warn({ err }, 'router close failed') })
    await drain(servers, config.drainTimeoutMs, logger)
    herd?.close()
    mirror?.close()
    cri.close()
    await store.close()
    client.close()
    process.off('unhandledRejection', onUnhandled)
    logger.info({}, 'exit gracefully')
  }
}

/**
 * Closes the apps: no new connections, idle keep-alive ones at once, in-flight transfers get `timeoutMs`, then every
 * remaining connection is cut. Without the cut a client that stops reading keeps the process up until it gives up,
 * beyond the pod's termination grace period, and the kubelet then SIGKILLs it.
 */
async function drain (servers: readonly FastifyInstance[], timeoutMs: number, logger: Logger): Promise<void> {
  const closed = Promise.allSettled(servers.map(async (s) => { await s.close() }))
  // node:http's close() ends only the connections idle at that moment; one whose response ends later stays open as
  // keep-alive, and would hold the process until the deadline.
  const sweep = setInterval(() => { for (const s of servers) s.server.closeIdleConnections() }, 100)
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<boolean>((resolve) => { timer = setTimeout(() => { resolve(true) }, timeoutMs) })
  try {
    if (!await Promise.race([closed.then(() => false), expired])) return
    const counts = await Promise.all(servers.map(async (s) => await new Promise<number>((resolve) => {
      s.server.getConnections((err, n) => { resolve(err === null ? n : 0) })
    })))
    for (const s of servers) s.server.closeAllConnections()
    logger.info({ connections: counts.reduce((a, b) => a + b, 0), drainTimeoutMs: timeoutMs }, 'drain timeout reached, cut the remaining connections')
    await closed
  } finally {
    clearInterval(sweep)
    clearTimeout(timer)
  }
}

/** This host's interface addresses, for the registry's own serving certificate (link-local ones left out). */
function interfaceIps (): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? [])
    .filter((a) => a.family === 'IPv4' || (!a.address.toLowerCase().startsWith('fe80:') && a.scopeid === 0))
    .map((a) => a.address))
}
