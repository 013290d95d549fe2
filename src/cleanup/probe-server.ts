import { createServer } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseHostPort } from '../util/addr.ts'
import { Header } from '../util/http.ts'
import type { Logger } from '../log/index.ts'

export interface CleanupProbeServer {
  /** Where it listens (port resolved when `:0` was asked for). */
  address: { host: string, port: number }
  /** Stops listening and drops open connections. Safe to call more than once. */
  close: () => Promise<void>
}

export interface StartCleanupProbeServerOptions {
  /** `host:port`, `:port` for every interface. */
  addr: string
  /** Aborting closes the server. */
  signal?: AbortSignal
  logger?: Pick<Logger, 'info' | 'warn'>
}

/** Path of the readiness endpoint the cleanup-wait pod probes. */
export const readinessPath = '/readyz'

/**
 * Whether the probe server answers 200. Spegel's check (`method != GET && path != /healthz` ⇒ 404) accepts any GET and
 * any method on the path; here only GET and HEAD of exactly /readyz succeed.
 */
export function isReadinessRequest (method: string | undefined, url: string | undefined): boolean {
  if (method !== 'GET' && method !== 'HEAD') {
    return false
  }
  return requestPath(url ?? '') === readinessPath
}

function requestPath (url: string): string {
  if (url.startsWith('/')) {
    const end = url.search(/[?#]/)
    return end === -1 ? url : url.slice(0, end)
  }
  // Absolute form (`GET http://host/readyz`), which HTTP/1.1 servers must accept.
  try {
    return new URL(url).pathname
  } catch {
    return ''
  }
}

/**
 * Serves the readiness probe of the `cleanup` DaemonSet: once its pod is ready, the configuration on its node has
 * been restored. Resolves when listening.
 */
export async function startCleanupProbeServer (options: StartCleanupProbeServerOptions): Promise<CleanupProbeServer> {
  options.signal?.throwIfAborted()
  const { host, port } = parseHostPort(options.addr)
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (isReadinessRequest(req.method, req.url)) {
      res.writeHead(200, { [Header.contentLength]: '0' })
    } else {
      options.logger?.warn({ method: req.method, path: req.url }, 'unsupported probe request')
      res.writeHead(404, { [Header.contentLength]: '0' })
    }
    res.end()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(host === '' ? { port } : { host, port }, () => {
      server.off('error', reject)
      resolve()
    })
  })

  const info = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      options.signal?.removeEventListener('abort', onAbort)
      server.close(() => { resolve() })
      server.closeAllConnections()
    })
    return await closing
  }
  const onAbort = (): void => { void close() }
  options.signal?.addEventListener('abort', onAbort, { once: true })
  if (options.signal?.aborted === true) {
    await close()
  }

  options.logger?.info({ addr: options.addr, port: info.port }, 'cleanup probe server listening')
  return { address: { host: info.address, port: info.port }, close }
}
