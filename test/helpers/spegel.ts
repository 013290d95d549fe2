// Runs this repository's CLI as a real process, the way the DaemonSet runs it.
import { fileURLToPath } from 'node:url'
import { run, startProcess, type ProcessHandle, type RunResult } from './process.ts'
import { freePorts } from './ports.ts'
import { waitFor } from './wait.ts'

export const cliPath = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))

export interface SpegelRegistry {
  process: ProcessHandle
  /** http://host:port of the registry API. */
  url: string
  /** host:port of the registry API. */
  host: string
  metricsUrl: string
  stop: () => Promise<void>
}

export interface StartSpegelOptions {
  containerdSocket: string
  contentPath: string
  namespace?: string
  /** Address to bind; defaults to 127.0.0.1. */
  host?: string
  registryPort?: number
  metricsPort?: number
  routerPort?: number
  args?: readonly string[]
  env?: Record<string, string | undefined>
  netns?: string
  logLevel?: string
  /** Wait for /readyz (default true). */
  waitReady?: boolean
  /** CLI entry to run (default: the TypeScript sources; benchmarks pass the compiled dist/cli/main.js). */
  cli?: string
}

/** Starts `spegel registry` and waits until it answers /readyz. */
export async function startSpegelRegistry (options: StartSpegelOptions): Promise<SpegelRegistry> {
  const host = options.host ?? '127.0.0.1'
  const picked = await freePorts(3)
  const registryPort = options.registryPort ?? picked[0]!
  const metricsPort = options.metricsPort ?? picked[1]!
  const routerPort = options.routerPort ?? picked[2]!
  const bracket = host.includes(':') ? `[${host}]` : host
  const args = [
    options.cli ?? cliPath, 'registry',
    `--log-level=${options.logLevel ?? 'INFO'}`,
    `--registry-addr=${bracket}:${registryPort}`,
    `--metrics-addr=${bracket}:${metricsPort}`,
    `--router-addr=${bracket}:${routerPort}`,
    `--containerd-sock=${options.containerdSocket}`,
    `--containerd-namespace=${options.namespace ?? 'k8s.io'}`,
    `--containerd-content-path=${options.contentPath}`,
    ...(options.args ?? []),
  ]
  const proc = await startProcess(process.execPath, args, {
    name: 'spegel',
    ...(options.env !== undefined ? { env: options.env } : {}),
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
  })
  const url = `http://${bracket}:${registryPort}`
  if (options.waitReady !== false) {
    try {
      await waitFor(async () => {
        if (proc.exitStatus !== undefined) throw new Error(`spegel exited early:\n${proc.output()}`)
        try {
          const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) })
          await res.body?.cancel()
          return res.status === 200
        } catch {
          return false
        }
      }, { timeoutMs: 20_000, intervalMs: 100, what: 'spegel /readyz', context: () => proc.output() })
    } catch (err) {
      await proc.stop('SIGKILL')
      throw err
    }
  }
  return {
    process: proc,
    url,
    host: `${bracket}:${registryPort}`,
    metricsUrl: `http://${bracket}:${metricsPort}`,
    stop: async () => { if (proc.exitStatus === undefined) await proc.stop('SIGTERM', 10_000) },
  }
}

/** Runs a short-lived spegel subcommand (configuration, cleanup, version) and returns its result. */
export async function runSpegel (args: readonly string[], options: { env?: Record<string, string | undefined>, allowNonZero?: boolean, timeoutMs?: number } = {}): Promise<RunResult> {
  return await run(process.execPath, [cliPath, ...args], {
    ...(options.env !== undefined ? { env: options.env } : {}),
    ...(options.allowNonZero === true ? { allowNonZero: true } : {}),
    timeoutMs: options.timeoutMs ?? 30_000,
  })
}
