// The Helm post-delete hook: `cleanup` (restore the containerd configuration, then report ready) and `cleanup-wait`
// (wait until every cleanup pod reports ready).
import { cleanupMirrorConfiguration } from '../hosts/index.ts'
import { startCleanupProbeServer } from './probe-server.ts'
import type { Logger } from '../log/index.ts'

export { ProbeFailedError } from './errors.ts'
export { InvalidAddressError, joinHostPort, parseHostPort } from '../util/addr.ts'
export type { HostPort } from '../util/addr.ts'
export { isReadinessRequest, readinessPath, startCleanupProbeServer } from './probe-server.ts'
export type { CleanupProbeServer, StartCleanupProbeServerOptions } from './probe-server.ts'
export {
  cleanupWait, defaultPeriodMs, defaultProbeConcurrency, defaultProbeTimeoutMs, defaultThreshold, probe,
  resolveAllAddresses,
} from './wait.ts'
export type { AddressResolver, CleanupWaitOptions } from './wait.ts'

export interface RunCleanupOptions {
  /** containerd's `config_path`. */
  configPath: string
  /** Probe server address (`:8080`). */
  addr: string
  /** Aborting (SIGTERM) stops the probe server; the returned promise then resolves. */
  signal: AbortSignal
  logger?: Pick<Logger, 'info' | 'warn'>
}

/**
 * The `cleanup` subcommand: restore the configuration first (readiness means "restored on this node"), then serve
 * the probe until `signal` aborts.
 */
export async function runCleanup (options: RunCleanupOptions): Promise<void> {
  await cleanupMirrorConfiguration({ configPath: options.configPath, logger: options.logger, signal: options.signal })
  const server = await startCleanupProbeServer({ addr: options.addr, signal: options.signal, logger: options.logger })
  options.logger?.info({}, 'waiting to be shutdown')
  if (!options.signal.aborted) {
    await new Promise<void>((resolve) => { options.signal.addEventListener('abort', () => { resolve() }, { once: true }) })
  }
  await server.close()
}
