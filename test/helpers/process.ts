// Starting and stopping real processes in tests. Processes are always stopped by PID (never by name), output is kept
// as a bounded tail for error messages, and every child still alive when the test process exits is SIGKILLed.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import type { WriteStream } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { requireTool } from './tools.ts'
import { WaitTimeoutError } from './wait.ts'

export class ProcessError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ProcessError'
  }
}

/** A `run` that exited non-zero (when not allowed) or timed out. */
export class RunError extends Error {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  constructor (message: string, result: { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }) {
    super(message)
    this.name = 'RunError'
    this.code = result.code
    this.signal = result.signal
    this.stdout = result.stdout
    this.stderr = result.stderr
  }
}

export interface ExitStatus {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface StartProcessOptions {
  /** Merged over process.env. */
  env?: Record<string, string | undefined>
  cwd?: string
  /** Appends all stdout and stderr to this file as well. */
  logFile?: string
  /** Runs the command inside this network namespace via `ip netns exec` (which execs, so the PID is the command's). */
  netns?: string
  /** Bytes of stdout and of stderr kept for error messages (default 64 KiB each). */
  tailBytes?: number
  /** Called with each complete output line. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void
  /** Label used in error messages (default: the command's base name). */
  name?: string
}

export interface ProcessHandle {
  readonly pid: number
  readonly name: string
  /** The argv actually spawned (including any `ip netns exec` prefix). */
  readonly argv: readonly string[]
  /** Undefined while running. */
  readonly exitStatus: ExitStatus | undefined
  /** The last bytes of stdout. */
  stdout: () => string
  /** The last bytes of stderr. */
  stderr: () => string
  /** The last bytes of stdout and stderr interleaved, for error messages. */
  output: () => string
  /** Resolves when the process has exited and its output has been flushed. */
  waitForExit: (options?: { timeoutMs?: number, signal?: AbortSignal }) => Promise<ExitStatus>
  /** Sends `signal` to the PID, escalates to SIGKILL after timeoutMs (default 10 s), resolves once it has exited. */
  stop: (signal?: NodeJS.Signals, timeoutMs?: number) => Promise<ExitStatus>
  /** Waits until an output line matches; rejects early if the process exits. */
  waitForOutput: (pattern: RegExp | string, options?: { timeoutMs?: number, signal?: AbortSignal }) => Promise<string>
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // A test that crashes must not leave registries or containerd running: kill our own children by PID.
  process.on('exit', () => {
    for (const child of live) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try { process.kill(child.pid, 'SIGKILL') } catch {}
      }
    }
  })
}

/** Keeps the last `limit` bytes written to it. */
class Tail {
  private chunks: Buffer[] = []
  private size = 0
  private dropped = false
  private readonly limit: number
  constructor (limit: number) {
    this.limit = limit
  }

  push (chunk: Buffer): void {
    this.chunks.push(chunk)
    this.size += chunk.length
    while (this.size > this.limit && this.chunks.length > 1) {
      const first = this.chunks.shift()
      if (first !== undefined) this.size -= first.length
      this.dropped = true
    }
    if (this.size > this.limit && this.chunks.length === 1) {
      const only = this.chunks[0]
      if (only !== undefined) {
        this.chunks[0] = only.subarray(only.length - this.limit)
        this.size = this.limit
        this.dropped = true
      }
    }
  }

  toString (): string {
    return (this.dropped ? '[…]' : '') + Buffer.concat(this.chunks).toString('utf8')
  }
}

function withNetns (cmd: string, args: readonly string[], netns: string | undefined): string[] {
  if (netns === undefined) return [cmd, ...args]
  const ip = requireTool('ip', 'apt-get install -y iproute2')
  return [ip, 'netns', 'exec', netns, cmd, ...args]
}

/** Spawns a long-running process; resolves once it has started (rejects if the binary cannot be spawned). */
export async function startProcess (cmd: string, args: readonly string[], options: StartProcessOptions = {}): Promise<ProcessHandle> {
  installExitHook()
  const argv = withNetns(cmd, args, options.netns)
  const name = options.name ?? cmd.split('/').pop() ?? cmd
  const tailBytes = options.tailBytes ?? 64 * 1024
  const outTail = new Tail(tailBytes)
  const errTail = new Tail(tailBytes)
  const bothTail = new Tail(tailBytes)
  const [file, ...rest] = argv as [string, ...string[]]
  const child = spawn(file, rest, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  live.add(child)

  let log: WriteStream | undefined
  if (options.logFile !== undefined) log = createWriteStream(options.logFile, { flags: 'a' })

  const lineWaiters = new Set<(line: string) => void>()
  const partial = { stdout: '', stderr: '' }
  const onData = (stream: 'stdout' | 'stderr', chunk: Buffer): void => {
    ;(stream === 'stdout' ? outTail : errTail).push(chunk)
    bothTail.push(chunk)
    log?.write(chunk)
    const text = partial[stream] + chunk.toString('utf8')
    const lines = text.split('\n')
    partial[stream] = lines.pop() ?? ''
    for (const line of lines) emitLine(line, stream)
  }
  const emitLine = (line: string, stream: 'stdout' | 'stderr'): void => {
    options.onLine?.(line, stream)
    for (const waiter of lineWaiters) waiter(line)
  }
  child.stdout?.on('data', (c: Buffer) => { onData('stdout', c) })
  child.stderr?.on('data', (c: Buffer) => { onData('stderr', c) })

  let exitStatus: ExitStatus | undefined
  // 'exit' gives the status; 'close' follows once stdio is drained. A grandchild that inherited the pipes can keep
  // them open, so wait for 'close' only briefly after 'exit'.
  const closed = new Promise<void>((resolve) => { child.once('close', () => { resolve() }) })
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child)
      void Promise.race([closed, sleep(1000)]).then(() => {
        for (const stream of ['stdout', 'stderr'] as const) {
          if (partial[stream] !== '') emitLine(partial[stream], stream)
          partial[stream] = ''
        }
        const status = { code, signal }
        exitStatus = status
        if (log === undefined) { resolve(status); return }
        log.end(() => { resolve(status) })
      })
    })
  })

  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', (err) => {
      live.delete(child)
      reject(new ProcessError(`cannot start ${argv.join(' ')}: ${err.message}`))
    })
  })
  const pid = child.pid
  if (pid === undefined) throw new ProcessError(`cannot start ${argv.join(' ')}: no pid`)

  const waitForExit = async (opts: { timeoutMs?: number, signal?: AbortSignal } = {}): Promise<ExitStatus> => {
    if (opts.timeoutMs === undefined && opts.signal === undefined) return await exited
    const abort = AbortSignal.any([
      ...(opts.timeoutMs !== undefined ? [AbortSignal.timeout(opts.timeoutMs)] : []),
      ...(opts.signal !== undefined ? [opts.signal] : []),
    ])
    return await new Promise<ExitStatus>((resolve, reject) => {
      const onAbort = (): void => {
        reject(opts.signal?.aborted === true
          ? opts.signal.reason
          : new WaitTimeoutError(`${name} (pid ${pid}) did not exit within ${opts.timeoutMs} ms`))
      }
      if (abort.aborted) { onAbort(); return }
      abort.addEventListener('abort', onAbort, { once: true })
      void exited.then((s) => { abort.removeEventListener('abort', onAbort); resolve(s) })
    })
  }

  const handle: ProcessHandle = {
    pid,
    name,
    argv,
    get exitStatus () { return exitStatus },
    stdout: () => outTail.toString(),
    stderr: () => errTail.toString(),
    output: () => bothTail.toString(),
    waitForExit,
    stop: async (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<ExitStatus> => {
      if (exitStatus !== undefined) return exitStatus
      try { process.kill(pid, signal) } catch {}
      try {
        return await waitForExit({ timeoutMs })
      } catch (err) {
        if (!(err instanceof WaitTimeoutError)) throw err
        try { process.kill(pid, 'SIGKILL') } catch {}
        return await waitForExit({ timeoutMs: 10_000 })
      }
    },
    waitForOutput: async (pattern, opts = {}) => {
      const matches = (line: string): boolean => typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line)
      // Lines already seen are in the tail: check them first.
      for (const line of bothTail.toString().split('\n')) if (matches(line)) return line
      const timeoutMs = opts.timeoutMs ?? 30_000
      return await new Promise<string>((resolve, reject) => {
        const cleanup = (): void => {
          lineWaiters.delete(onLineSeen)
          clearTimeout(timer)
          opts.signal?.removeEventListener('abort', onAbort)
        }
        const onLineSeen = (line: string): void => {
          if (matches(line)) { cleanup(); resolve(line) }
        }
        const onAbort = (): void => { cleanup(); reject(opts.signal?.reason) }
        const timer = setTimeout(() => {
          cleanup()
          reject(new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for ${name} (pid ${pid}) to print ${String(pattern)}; output:\n${bothTail.toString()}`))
        }, timeoutMs)
        lineWaiters.add(onLineSeen)
        opts.signal?.addEventListener('abort', onAbort, { once: true })
        void exited.then((s) => {
          if (!lineWaiters.has(onLineSeen)) return
          cleanup()
          reject(new ProcessError(`${name} (pid ${pid}) exited (code ${s.code}, signal ${s.signal}) before printing ${String(pattern)}; output:\n${bothTail.toString()}`))
        })
      })
    },
  }
  return handle
}

/** True while a process with this PID exists (signal 0 probes without sending anything). */
export function isPidAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export interface RunOptions {
  env?: Record<string, string | undefined>
  cwd?: string
  netns?: string
  /** Default 120 s; the process is SIGKILLed when it expires. */
  timeoutMs?: number
  /** Resolve instead of rejecting on a non-zero exit: true for any code, or the list of accepted codes. */
  allowNonZero?: boolean | readonly number[]
  /** Written to stdin. */
  input?: string | Uint8Array
  /** Output beyond this many bytes per stream is dropped from the start (default 16 MiB). */
  maxBuffer?: number
  signal?: AbortSignal
}

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs a command to completion; rejects with RunError (carrying stderr) on failure or timeout. */
export async function run (cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const argv = withNetns(cmd, args, options.netns)
  const [file, ...rest] = argv as [string, ...string[]]
  const timeoutMs = options.timeoutMs ?? 120_000
  const maxBuffer = options.maxBuffer ?? 16 * 1024 * 1024
  const out = new Tail(maxBuffer)
  const err = new Tail(maxBuffer)
  installExitHook()
  return await new Promise<RunResult>((resolve, reject) => {
    const child = spawn(file, rest, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    live.add(child)
    let timedOut = false
    const kill = (): void => {
      if (child.pid !== undefined) { try { process.kill(child.pid, 'SIGKILL') } catch {} }
    }
    const timer = setTimeout(() => { timedOut = true; kill() }, timeoutMs)
    const onAbort = (): void => { kill() }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    if (options.input !== undefined) child.stdin?.end(options.input)
    child.stdout?.on('data', (c: Buffer) => { out.push(c) })
    child.stderr?.on('data', (c: Buffer) => { err.push(c) })
    child.once('error', (e) => {
      clearTimeout(timer)
      live.delete(child)
      reject(new RunError(`cannot run ${argv.join(' ')}: ${e.message}`, { code: null, signal: null, stdout: '', stderr: '' }))
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      live.delete(child)
      options.signal?.removeEventListener('abort', onAbort)
      const result = { code, signal, stdout: out.toString(), stderr: err.toString() }
      if (options.signal?.aborted === true) { reject(options.signal.reason); return }
      if (timedOut) {
        reject(new RunError(`${argv.join(' ')} timed out after ${timeoutMs} ms; stderr:\n${result.stderr}`, result))
        return
      }
      const allow = options.allowNonZero
      const allowed = code === 0 || allow === true || (Array.isArray(allow) && code !== null && allow.includes(code))
      if (!allowed || code === null) {
        reject(new RunError(`${argv.join(' ')} failed (exit code ${code}, signal ${signal}); stderr:\n${result.stderr.trim()}`, result))
        return
      }
      resolve({ code, stdout: result.stdout, stderr: result.stderr })
    })
  })
}
