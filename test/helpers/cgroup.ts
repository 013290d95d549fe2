// cgroup v1 memory cgroups for tests that hold a daemon to a pod's memory limit. The memory controller is writable as
// root on the test machines (reference/test-environment.md): a cgroup is a directory under the controller's mount, the
// limit is `memory.limit_in_bytes`, and a process that goes over it is OOM-killed (exit 137, counted as `oom_kill` in
// `memory.oom_control`).
//
// Names carry a prefix, this process's PID and a random suffix; only cgroups created here are ever removed, and only
// once empty (the kernel refuses rmdir of a cgroup with tasks).
import { randomBytes } from 'node:crypto'
import { accessSync, constants, rmdirSync } from 'node:fs'
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MissingToolError } from './tools.ts'
import { waitFor } from './wait.ts'

/** Where the v1 memory controller is mounted on the host (Debian 12 with cgroup v1 / hybrid). */
export const memoryControllerRoot = '/sys/fs/cgroup/memory'

export class CgroupError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CgroupError'
  }
}

/** The counters of `memory.oom_control`. */
export interface OomControl {
  oomKillDisable: boolean
  underOom: boolean
  /** Processes of this cgroup the kernel OOM-killed (kernel ≥ 4.13). */
  oomKill: number
}

export interface MemoryCgroup {
  /** Path below the controller root, e.g. `spegel-test-1234-a1b2c3` (what `/proc/PID/cgroup` shows after a slash). */
  readonly name: string
  /** `<memoryControllerRoot>/<name>` on the host. */
  readonly path: string
  readonly limitBytes: number
  /** `memory.usage_in_bytes`: anonymous memory plus page cache charged to the cgroup now. */
  usageBytes: () => Promise<number>
  /** `memory.max_usage_in_bytes`: the peak of usageBytes since creation or the last resetMaxUsage(). */
  maxUsageBytes: () => Promise<number>
  /** Starts a new peak measurement (writing 0 to `memory.max_usage_in_bytes`). */
  resetMaxUsage: () => Promise<void>
  /** `memory.failcnt`: times usage hit the limit (the kernel then reclaims; page cache usually goes first). */
  failcnt: () => Promise<number>
  oomControl: () => Promise<OomControl>
  /** PIDs in the cgroup (`cgroup.procs`). */
  procs: () => Promise<number[]>
  /** Moves a process in. Memory it allocated before stays charged elsewhere (this kernel refuses move_charge). */
  addProcess: (pid: number) => Promise<void>
  /** Removes the cgroup once it is empty, retrying briefly while exited processes are reaped. Idempotent. */
  remove: (options?: { timeoutMs?: number }) => Promise<void>
  [Symbol.asyncDispose]: () => Promise<void>
}

export interface CreateMemoryCgroupOptions {
  /** Hard limit, bytes (`memory.limit_in_bytes`; also memory+swap when the kernel accounts swap). */
  limitBytes: number
  /** Start of the name (default `spegel-test`); letters, digits and dashes. */
  prefix?: string
}

/** Throws MissingToolError (with how to fix it) unless the v1 memory controller is mounted and writable. */
export function requireMemoryCgroupV1 (): void {
  try {
    accessSync(join(memoryControllerRoot, 'memory.limit_in_bytes'), constants.R_OK)
  } catch {
    throw new MissingToolError(
      `the cgroup v1 memory controller is not mounted at ${memoryControllerRoot}: this test needs a cgroup v1 (or hybrid) ` +
      'host with the memory controller, e.g. `mkdir -p /sys/fs/cgroup/memory && mount -t cgroup -o memory cgmem ' +
      '/sys/fs/cgroup/memory` as root (a cgroup v2-only host boots with systemd.unified_cgroup_hierarchy=0 for v1)')
  }
  try {
    accessSync(memoryControllerRoot, constants.W_OK)
  } catch {
    throw new MissingToolError(`${memoryControllerRoot} is not writable: run this test as root`)
  }
}

/** Names of cgroups created by this process and not removed yet, for the exit hook. */
const live = new Set<string>()
let exitHookInstalled = false

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // Last resort when a run ends without remove(): 'exit' handlers cannot await, so retry synchronously for a moment
  // while the processes killed by the other exit hooks (test/helpers/process.ts) are reaped.
  process.on('exit', () => {
    const wait = new Int32Array(new SharedArrayBuffer(4))
    for (const name of live) {
      for (let i = 0; i < 20; i++) {
        try {
          rmdirSync(join(memoryControllerRoot, name))
          break
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') break
          Atomics.wait(wait, 0, 0, 50)
        }
      }
    }
    live.clear()
  })
}

/** Creates a uniquely named memory cgroup with a hard limit. */
export async function createMemoryCgroup (options: CreateMemoryCgroupOptions): Promise<MemoryCgroup> {
  requireMemoryCgroupV1()
  const prefix = options.prefix ?? 'spegel-test'
  if (!/^[a-zA-Z0-9-]{1,40}$/.test(prefix)) throw new CgroupError(`invalid cgroup prefix ${JSON.stringify(prefix)}`)
  if (!Number.isSafeInteger(options.limitBytes) || options.limitBytes < 4096) throw new CgroupError(`invalid memory limit ${options.limitBytes}`)
  const name = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`
  const path = join(memoryControllerRoot, name)
  installExitHook()
  await mkdir(path)
  live.add(name)
  const file = (f: string): string => join(path, f)
  const readNumber = async (f: string): Promise<number> => {
    const text = (await readFile(file(f), 'utf8')).trim()
    const n = Number(text)
    if (!Number.isFinite(n)) throw new CgroupError(`${file(f)}: not a number: ${JSON.stringify(text)}`)
    return n
  }
  let removed = false
  const remove = async (opts: { timeoutMs?: number } = {}): Promise<void> => {
    if (removed) return
    // EBUSY: tasks remain (an exited process not reaped yet, or one still running, which we never kill here).
    await waitFor(async () => {
      await rmdir(path).catch((err: unknown) => { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err })
      return true
    }, { timeoutMs: opts.timeoutMs ?? 5000, intervalMs: 100, what: `cgroup ${path} to be removable` }).catch(async (err: unknown) => {
      const procs = await readFile(file('cgroup.procs'), 'utf8').catch(() => '?')
      throw new CgroupError(`cannot remove cgroup ${path}: ${(err as Error).message}; processes still in it: ${procs.trim().split('\n').join(' ') || 'none'}`, { cause: err })
    })
    removed = true
    live.delete(name)
  }
  try {
    await writeFile(file('memory.limit_in_bytes'), String(options.limitBytes))
    // With swap accounting, also cap memory+swap, so the limit means what it means in a pod (no swapping past it).
    // It may only be set once memory.limit_in_bytes is at most its value; absent without swap accounting.
    await writeFile(file('memory.memsw.limit_in_bytes'), String(options.limitBytes)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
    const applied = await readNumber('memory.limit_in_bytes')
    // The kernel rounds the limit down to whole pages.
    if (applied > options.limitBytes || applied < options.limitBytes - 4096) {
      throw new CgroupError(`${path}: memory.limit_in_bytes is ${applied} after writing ${options.limitBytes}`)
    }
  } catch (err) {
    await remove().catch(() => {})
    throw err instanceof CgroupError ? err : new CgroupError(`cannot set up cgroup ${path}: ${(err as Error).message}`, { cause: err })
  }
  return {
    name,
    path,
    limitBytes: options.limitBytes,
    usageBytes: async () => await readNumber('memory.usage_in_bytes'),
    maxUsageBytes: async () => await readNumber('memory.max_usage_in_bytes'),
    resetMaxUsage: async () => { await writeFile(file('memory.max_usage_in_bytes'), '0') },
    failcnt: async () => await readNumber('memory.failcnt'),
    oomControl: async () => parseOomControl(await readFile(file('memory.oom_control'), 'utf8')),
    procs: async () => (await readFile(file('cgroup.procs'), 'utf8')).split('\n').filter((l) => l.trim() !== '').map(Number),
    addProcess: async (pid) => { await writeFile(file('cgroup.procs'), String(pid)) },
    remove,
    [Symbol.asyncDispose]: remove,
  }
}

/** Parses `memory.oom_control` ("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"). */
export function parseOomControl (text: string): OomControl {
  const values = new Map<string, number>()
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/)
    if (key !== undefined && key !== '' && value !== undefined) values.set(key, Number(value))
  }
  const oomKill = values.get('oom_kill')
  if (oomKill === undefined) throw new CgroupError(`memory.oom_control has no oom_kill counter (kernel older than 4.13?): ${JSON.stringify(text)}`)
  return { oomKillDisable: values.get('oom_kill_disable') === 1, underOom: values.get('under_oom') === 1, oomKill }
}

/**
 * The memory cgroup (path below the controller root, with a leading slash) a process is in, from `/proc/PID/cgroup`;
 * undefined when the process is gone.
 */
export async function memoryCgroupOf (pid: number): Promise<string | undefined> {
  let text: string
  try {
    text = await readFile(`/proc/${pid}/cgroup`, 'utf8')
  } catch {
    return undefined
  }
  for (const line of text.split('\n')) {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line) ?? []
    if (controllers !== undefined && controllers.split(',').includes('memory')) return path
  }
  return undefined
}

export interface JoinCgroupCommandOptions {
  /**
   * `ulimit -n` before exec (RLIMIT_NOFILE). Where the hard limit cannot be raised, the soft limit goes up to the hard
   * one (Node raises its soft limit to the hard one at startup anyway); read /proc/PID/limits for what was applied.
   */
  nofile?: number
  /** Runs the command with exactly this environment (`env -i`), as a container's entrypoint gets only its image's. */
  env?: Record<string, string>
}

/**
 * An argv that, run inside `ip netns exec` (which gives the process a fresh /sys without the cgroup tree), mounts the
 * memory controller privately, moves itself into `cgroup` and then execs `argv`: the PID stays the command's, every
 * byte it allocates is charged to the cgroup, and libuv (process.constrainedMemory(), which Node's
 * --max-old-space-size-percentage reads) finds the limit at /sys/fs/cgroup/memory/<name>/ as it would in a pod.
 * The mounts stay inside the mount namespace `ip netns exec` made for this process.
 */
export function joinCgroupCommand (cgroup: Pick<MemoryCgroup, 'name'>, argv: readonly string[], options: JoinCgroupCommandOptions = {}): string[] {
  if (!/^[a-zA-Z0-9._/-]+$/.test(cgroup.name) || cgroup.name.includes('..')) throw new CgroupError(`unsafe cgroup name ${JSON.stringify(cgroup.name)}`)
  if (argv.length === 0) throw new CgroupError('no command to run')
  const lines = [
    'set -e',
    // Already there when this runs without a fresh sysfs (outside `ip netns exec`): then the host's tree is used.
    `if [ ! -e ${memoryControllerRoot}/cgroup.procs ]; then`,
    '  mount -t tmpfs cg /sys/fs/cgroup',
    `  mkdir -p ${memoryControllerRoot}`,
    `  mount -t cgroup -o memory cgmem ${memoryControllerRoot}`,
    'fi',
    `echo $$ > ${memoryControllerRoot}/${cgroup.name}/cgroup.procs`,
  ]
  if (options.nofile !== undefined) {
    if (!Number.isSafeInteger(options.nofile) || options.nofile < 1) throw new CgroupError(`invalid nofile ${options.nofile}`)
    // Raising the hard limit needs CAP_SYS_RESOURCE, which a sandboxed root may lack: then up to the hard limit.
    lines.push(`ulimit -n ${options.nofile} 2>/dev/null || ulimit -n "$(ulimit -Hn)"`)
  }
  const envArgs: string[] = []
  if (options.env !== undefined) {
    envArgs.push('/usr/bin/env', '-i')
    for (const [key, value] of Object.entries(options.env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new CgroupError(`invalid environment variable name ${JSON.stringify(key)}`)
      envArgs.push(`${key}=${value}`)
    }
  }
  lines.push('exec "$@"')
  // "$@" keeps every argument as given: nothing of argv is ever parsed by the shell.
  return ['/bin/sh', '-c', lines.join('\n'), 'spegel-cgroup-join', ...envArgs, ...argv]
}
