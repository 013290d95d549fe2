import { lookup } from 'node:dns/promises'
import { request } from 'node:http'
import { isIP } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { raceAbort } from '../util/abort.ts'
import { joinHostPort, parseHostPort } from '../util/addr.ts'
import { ProbeFailedError } from './errors.ts'
import { readinessPath } from './probe-server.ts'
import type { Logger } from '../log/index.ts'

/** Resolves a host name to every address (A and AAAA). */
export type AddressResolver = (host: string, options: { signal?: AbortSignal }) => Promise<string[]>

export const defaultThreshold = 3
export const defaultPeriodMs = 2000
export const defaultProbeTimeoutMs = 1000
export const defaultProbeConcurrency = 10

export interface CleanupWaitOptions {
  /** `host:port` of the cleanup pods (a headless Service name, or a literal IP). */
  probeEndpoint: string
  /** Consecutive all-ready rounds needed. */
  threshold?: number
  /** Time between the starts of two rounds; the first round starts at once. */
  periodMs?: number
  /** Timeout of one probe request. */
  probeTimeoutMs?: number
  /** Probes in flight at once. */
  concurrency?: number
  signal?: AbortSignal
  resolver?: AddressResolver
  logger?: Pick<Logger, 'info' | 'warn'>
}

/**
 * Default resolver: literal IPs as they are; names through the system resolver (getaddrinfo, so /etc/hosts counts, as
 * with Go's resolver), all families, duplicates removed.
 */
export const resolveAllAddresses: AddressResolver = async (host, options) => {
  if (isIP(host) !== 0) {
    return [host]
  }
  // getaddrinfo cannot be cancelled; stop waiting for it instead.
  const addresses = await raceAbort(lookup(host, { all: true, order: 'verbatim' }), options.signal)
  return [...new Set(addresses.map((entry) => entry.address))]
}

/**
 * The `cleanup-wait` loop: every round resolves the endpoint's host and GETs `/readyz` on each address; a round where
 * every address answers 200 counts, any failure (DNS, no address, connection, timeout, other status) resets the count.
 * Resolves once `threshold` consecutive rounds succeeded; rejects with the abort reason when `signal` aborts.
 */
export async function cleanupWait (options: CleanupWaitOptions): Promise<void> {
  const { signal, logger } = options
  const { host, port } = parseHostPort(options.probeEndpoint)
  const threshold = options.threshold ?? defaultThreshold
  const periodMs = options.periodMs ?? defaultPeriodMs
  const timeoutMs = options.probeTimeoutMs ?? defaultProbeTimeoutMs
  const concurrency = options.concurrency ?? defaultProbeConcurrency
  if (!Number.isInteger(threshold) || threshold < 1) {
    throw new RangeError(`threshold must be a positive integer, got ${threshold}`)
  }
  if (!(periodMs >= 0) || !(timeoutMs > 0) || !Number.isInteger(concurrency) || concurrency < 1) {
    throw new RangeError('period, probe timeout and concurrency must be positive')
  }
  if (host === '') {
    throw new RangeError(`probe endpoint ${options.probeEndpoint} has no host`)
  }
  const resolver = options.resolver ?? resolveAllAddresses

  let count = 0
  for (;;) {
    signal?.throwIfAborted()
    const start = performance.now()
    try {
      const addresses = await resolver(host, { signal })
      if (addresses.length === 0) {
        throw new ProbeFailedError(joinHostPort(host, port), 'host resolved to no addresses')
      }
      await probeAll(addresses, port, timeoutMs, concurrency, signal)
      count++
      logger?.info({ threshold: count, endpoints: addresses.length, durationMs: Math.round(performance.now() - start) }, 'probe ran successfully')
      if (count >= threshold) {
        logger?.info({ threshold }, 'probe threshold reached')
        return
      }
    } catch (error) {
      signal?.throwIfAborted()
      count = 0
      logger?.warn({ err: error }, 'cleanup probe failed')
    }
    try {
      await sleep(Math.max(0, periodMs - (performance.now() - start)), undefined, { signal })
    } catch (error) {
      signal?.throwIfAborted()
      throw error
    }
  }
}

async function probeAll (addresses: readonly string[], port: number, timeoutMs: number, concurrency: number, signal: AbortSignal | undefined): Promise<void> {
  // Stop the remaining probes of a round as soon as one fails.
  const round = new AbortController()
  const roundSignal = signal === undefined ? round.signal : AbortSignal.any([signal, round.signal])
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < addresses.length) {
      const address = addresses[next++] as string
      await probe(address, port, timeoutMs, roundSignal)
    }
  }
  const workers = Array.from({ length: Math.min(concurrency, addresses.length) }, async () => {
    try {
      await worker()
    } catch (error) {
      round.abort()
      throw error
    }
  })
  const results = await Promise.allSettled(workers)
  const failure = results.find((result) => result.status === 'rejected')
  if (failure !== undefined) {
    // The first failure is the cause; later ones are mostly the aborts it triggered.
    throw failure.reason
  }
}

/** GET http://<address>:<port>/readyz; resolves on 200 (body drained), rejects otherwise. */
export async function probe (address: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const url = `http://${joinHostPort(address, port)}${readinessPath}`
  const timeout = AbortSignal.timeout(timeoutMs)
  const combined = signal === undefined ? timeout : AbortSignal.any([signal, timeout])
  combined.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    let settled = false
    const fail = (reason: string, cause?: unknown): void => {
      if (!settled) {
        settled = true
        reject(new ProbeFailedError(url, timeout.aborted ? `timed out after ${timeoutMs} ms` : reason, { cause }))
      }
    }
    // A fresh connection per probe (no agent): each round must reach the pods behind the name as they are now.
    const req = request({ host: address, port, path: readinessPath, method: 'GET', agent: false, signal: combined }, (res) => {
      res.on('error', (error) => { fail(error.message, error) })
      res.on('end', () => {
        if (res.statusCode === 200) {
          if (!settled) {
            settled = true
            resolve()
          }
        } else {
          fail(`unexpected status code ${res.statusCode ?? 0}`)
        }
      })
      res.on('close', () => { fail('connection closed before the response ended') })
      res.resume()
    })
    req.on('error', (error) => { fail(error.message, error) })
    req.end()
  })
}
