// A real upstream registry for integration tests: the CNCF distribution registry (Debian `docker-registry`, 2.8.2)
// with filesystem storage in a temporary directory and no auth. Its JSON logs are parsed into an access log so tests
// can assert exactly which requests reached the upstream and how many blob bytes it served.
import { writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { run, startProcess, ProcessError } from './process.ts'
import { freePort } from './ports.ts'
import { waitFor } from './wait.ts'
import type { ProcessHandle } from './process.ts'
import { makeTempDir } from './tmp.ts'
import { requireKnownTool } from './tools.ts'

/** One request the registry finished serving (its "response completed" log line). */
export interface RegistryAccessEntry {
  /** RFC 3339 time the response completed. */
  time: string
  method: string
  /** Request URI as sent, with query string. */
  uri: string
  /** The URI path without query string. */
  path: string
  status: number
  /**
   * Bytes the registry reports as written. A HEAD of a manifest is logged with the manifest's length although no
   * body is sent (a HEAD of a blob with 0), so count GET entries only when measuring transfer.
   */
  bytes: number
  /** Client address (the registry honours X-Forwarded-For here). */
  remoteAddr: string
  userAgent: string
  /** Repository name from the route, when the route has one. */
  repository?: string
  /** Digest from the route (blob or manifest by digest). */
  digest?: string
  /** Tag or digest from a manifest route. */
  reference?: string
}

export interface StartRegistryOptions {
  /** Listen address (default 127.0.0.1). In a network namespace, the namespace's own address. */
  host?: string
  /** Default: a free port on 127.0.0.1, or 5000 inside a network namespace. */
  port?: number
  /** Run the registry inside this network namespace (`ip netns exec`). */
  netns?: string
  /** Log level (default info: "response completed" lines are logged at info). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error'
  /** Startup timeout (default 15 s). */
  timeoutMs?: number
  /** Serve HTTPS with this certificate and key (PEM file paths); clients must trust its CA. */
  tls?: { cert: string, key: string }
}

export interface RegistryHandle {
  /** `http://HOST:PORT` */
  readonly url: string
  /** `HOST:PORT`, as used in image references. */
  readonly host: string
  readonly port: number
  readonly netns: string | undefined
  /** Where the registry keeps its files. */
  readonly dataDir: string
  readonly process: ProcessHandle
  /** Parsed entries of every request served so far (since the last resetAccessLog). */
  accessLog: () => RegistryAccessEntry[]
  /** Forgets the entries seen so far, e.g. after pushing the test images. */
  resetAccessLog: () => void
  /**
   * Total bytes of successful GET /v2/<name>/blobs/<digest> responses (HEAD is excluded: it sends no body).
   * Entries appear when a response completes; call waitForQuiet first after a transfer.
   */
  blobBytesServed: (filter?: { digest?: string, repository?: string }) => number
  /** Resolves once no new access-log entry has appeared for quietMs (default 300 ms). */
  waitForQuiet: (options?: { quietMs?: number, timeoutMs?: number }) => Promise<void>
  /** Stops the registry by PID and removes its directory. Safe to call twice. */
  stop: () => Promise<void>
}

export class RegistryStartError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'RegistryStartError'
  }
}

const routePattern = /^\/v2\/(.+)\/(blobs|manifests)\/([^/?]+)$/

/** Parses one registry log line; returns undefined for lines that are not a completed request. */
export function parseRegistryLogLine (line: string): RegistryAccessEntry | undefined {
  if (!line.startsWith('{')) return undefined
  let record: Record<string, unknown>
  try {
    record = JSON.parse(line) as Record<string, unknown>
  } catch {
    return undefined
  }
  const written = record['http.response.written']
  const status = record['http.response.status']
  const method = record['http.request.method']
  const uri = record['http.request.uri']
  // Only "response completed" (and "… with error") lines carry http.response.written.
  if (typeof written !== 'number' || typeof status !== 'number' || typeof method !== 'string' || typeof uri !== 'string') {
    return undefined
  }
  const path = uri.split('?')[0] ?? uri
  const entry: RegistryAccessEntry = {
    time: typeof record.time === 'string' ? record.time : '',
    method,
    uri,
    path,
    status,
    bytes: written,
    remoteAddr: typeof record['http.request.remoteaddr'] === 'string' ? record['http.request.remoteaddr'] : '',
    userAgent: typeof record['http.request.useragent'] === 'string' ? record['http.request.useragent'] : '',
  }
  const route = routePattern.exec(path)
  if (route !== null) {
    entry.repository = route[1]
    const ref = decodeURIComponent(route[3] ?? '')
    if (route[2] === 'manifests') entry.reference = ref
    if (ref.includes(':')) entry.digest = ref
  }
  return entry
}

function registryConfig (dataDir: string, host: string, port: number, logLevel: string, tls: StartRegistryOptions['tls']): string {
  // JSON is valid YAML: no YAML writer needed.
  return JSON.stringify({
    version: 0.1,
    log: { level: logLevel, formatter: 'json', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: dataDir },
      delete: { enabled: true },
      // Purging runs in the background and would add noise to the logs.
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: {
      addr: `${host.includes(':') ? `[${host}]` : host}:${port}`,
      // A fixed secret silences the "No HTTP secret provided" warning.
      secret: 'spegel-ts-test-registry',
      ...(tls !== undefined ? { tls: { certificate: tls.cert, key: tls.key } } : {}),
    },
  }, null, 2) + '\n'
}

/** Starts docker-registry and waits until `GET /v2/` answers 200. */
export async function startRegistry (options: StartRegistryOptions = {}): Promise<RegistryHandle> {
  const binary = requireKnownTool('docker-registry')
  const host = options.host ?? '127.0.0.1'
  const timeoutMs = options.timeoutMs ?? 15_000
  const tmp = await makeTempDir('spegel-registry')
  try {
    const dataDir = join(tmp.path, 'data')
    await mkdir(dataDir)
    // With an automatic port a concurrent process may grab it between freePort and bind: retry a few times.
    const attempts = options.port === undefined && options.netns === undefined ? 3 : 1
    let lastError: unknown
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const port = options.port ?? (options.netns !== undefined ? 5000 : await freePort(host))
      try {
        return await launch({ binary, host, port, dataDir, dir: tmp.path, options, timeoutMs, cleanup: tmp.cleanup })
      } catch (err) {
        lastError = err
        if (!(err instanceof RegistryStartError && /address already in use/.test(err.message))) break
      }
    }
    throw lastError
  } catch (err) {
    await tmp.cleanup()
    throw err
  }
}

interface LaunchArgs {
  binary: string
  host: string
  port: number
  dataDir: string
  dir: string
  options: StartRegistryOptions
  timeoutMs: number
  cleanup: () => Promise<void>
}

async function launch (args: LaunchArgs): Promise<RegistryHandle> {
  const { binary, host, port, dataDir, dir, options, timeoutMs } = args
  const configPath = join(dir, `config-${port}.yml`)
  await writeFile(configPath, registryConfig(dataDir, host, port, options.logLevel ?? 'info', options.tls))
  let entries: RegistryAccessEntry[] = []
  let lastEntryAt = Date.now()
  const proc = await startProcess(binary, ['serve', configPath], {
    netns: options.netns,
    cwd: dir,
    logFile: join(dir, `registry-${port}.log`),
    name: 'docker-registry',
    onLine: (line) => {
      const entry = parseRegistryLogLine(line)
      if (entry === undefined) return
      entries.push(entry)
      lastEntryAt = Date.now()
    },
  })
  const hostPort = `${host.includes(':') ? `[${host}]` : host}:${port}`
  const url = `${options.tls !== undefined ? 'https' : 'http'}://${hostPort}`
  try {
    await proc.waitForOutput('listening on', { timeoutMs })
    await waitFor(async () => {
      if (proc.exitStatus !== undefined) throw new ProcessError('registry exited')
      return (await probe(url, options.netns, options.tls !== undefined)) === 200
    }, {
      timeoutMs,
      intervalMs: 50,
      what: `registry at ${url} to answer GET /v2/ with 200`,
      context: () => `registry output:\n${proc.output()}`,
    })
  } catch (err) {
    await proc.stop('SIGKILL')
    throw new RegistryStartError(`cannot start docker-registry on ${hostPort}: ${err instanceof Error ? err.message : String(err)}`)
  }
  // Drop the readiness probes so the log starts empty.
  entries = []

  let stopped = false
  return {
    url,
    host: hostPort,
    port,
    netns: options.netns,
    dataDir,
    process: proc,
    accessLog: () => [...entries],
    resetAccessLog: () => { entries = [] },
    blobBytesServed: (filter = {}) => {
      let total = 0
      for (const e of entries) {
        if (e.method !== 'GET' || (e.status !== 200 && e.status !== 206)) continue
        if (!e.path.includes('/blobs/')) continue
        if (filter.digest !== undefined && e.digest !== filter.digest) continue
        if (filter.repository !== undefined && e.repository !== filter.repository) continue
        total += e.bytes
      }
      return total
    },
    waitForQuiet: async ({ quietMs = 300, timeoutMs: limit = 30_000 } = {}) => {
      const started = Date.now()
      for (;;) {
        const idle = Date.now() - lastEntryAt
        if (idle >= quietMs) return
        if (Date.now() - started > limit) throw new RegistryStartError(`registry access log still busy after ${limit} ms`)
        await sleep(Math.max(10, quietMs - idle))
      }
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      try {
        await proc.stop('SIGTERM', 5000)
      } finally {
        await args.cleanup()
      }
    },
  }
}

/**
 * Status of GET /v2/, or undefined when nothing answers. Inside a netns, or over TLS (whose test certificate this
 * process does not trust), the probe runs as a node one-liner.
 */
async function probe (url: string, netns: string | undefined, tls: boolean): Promise<number | undefined> {
  if (netns === undefined && !tls) {
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) })
      await res.body?.cancel()
      return res.status
    } catch {
      return undefined
    }
  }
  const script = `fetch(${JSON.stringify(`${url}/v2/`)}).then(r => { console.log(r.status) }, () => { console.log(0) })`
  const { stdout } = await run(process.execPath, ['-e', script], { netns, timeoutMs: 10_000, ...(tls ? { env: { NODE_TLS_REJECT_UNAUTHORIZED: '0', NODE_NO_WARNINGS: '1' } } : {}) })
  const status = Number(stdout.trim())
  return status > 0 ? status : undefined
}
