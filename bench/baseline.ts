// The daemon bundles the throughput benchmarks compare side by side: the working tree's (`npm run bundle`, as
// shipped) and a baseline git revision's, built from that revision's own scripts/bundle.ts in a temporary directory.
//
// The baseline tree is extracted with `git archive` (so the repository's worktree list and index are not touched) and
// reuses this repository's node_modules when the revision declares the same dependencies with the same lockfile;
// otherwise it gets its own `npm ci`.
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { run } from '../test/helpers/process.ts'

const repoRoot = fileURLToPath(new URL('../', import.meta.url))

/** Today's landed main before the memory-budget work: what `--baseline` compares against unless told otherwise. */
export const defaultBaselineRef = 'e9b6e12'

/**
 * The Node flags and environment of the image (Dockerfile) that the benchmarks give every daemon they compare, so both
 * sides run alike. NODE_OPTIONS carries only the flag that changes serving; MALLOC_* may be overridden from outside.
 */
export const shippedNodeOptions = '--max-semi-space-size=1'
export const shippedEnv = {
  MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
  MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ ?? '131072',
}

export interface DaemonBundle {
  /** What the benchmark prints for this side: `current`, or `baseline REF` with the short commit when REF is a name. */
  label: string
  /** The bundle's entry, `…/dist/spegel.mjs`. */
  cli: string
  /** Deletes whatever was built for this bundle outside the working tree; safe to call more than once. */
  cleanup: () => Promise<void>
}

/** Builds the working tree's bundle (dist/spegel.mjs) with `npm run bundle`. */
export async function buildCurrentBundle (): Promise<DaemonBundle> {
  await run('npm', ['run', 'bundle'], { cwd: repoRoot, timeoutMs: 300_000 })
  return { label: 'current', cli: join(repoRoot, 'dist/spegel.mjs'), cleanup: async () => {} }
}

/**
 * Builds revision `ref`'s bundle in a temporary directory and returns its entry; `cleanup` deletes the directory.
 * On failure the directory is deleted before the error is rethrown.
 */
export async function buildBaselineBundle (ref: string = defaultBaselineRef): Promise<DaemonBundle> {
  const commit = (await run('git', ['-C', repoRoot, 'rev-parse', '--verify', `${ref}^{commit}`])).stdout.trim()
  const dir = await mkdtemp(join(tmpdir(), `spegel-baseline-${commit.slice(0, 7)}-`))
  let removed = false
  const cleanup = async (): Promise<void> => {
    if (removed) return
    removed = true
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
  }
  try {
    await run('bash', ['-o', 'pipefail', '-c', 'git -C "$0" archive --format=tar "$1" | tar -x -C "$2"', repoRoot, commit, dir], { timeoutMs: 120_000 })
    try {
      await readFile(join(dir, 'scripts/bundle.ts'))
    } catch {
      throw new Error(`${ref} (${commit.slice(0, 7)}) has no scripts/bundle.ts to build its daemon with`)
    }
    if (await sameDependencies(dir)) {
      await symlink(join(repoRoot, 'node_modules'), join(dir, 'node_modules'), 'dir')
    } else {
      process.stderr.write(`baseline ${ref}: dependencies differ from the working tree's, running npm ci…\n`)
      await run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: dir, timeoutMs: 900_000 })
    }
    await run(process.execPath, ['scripts/bundle.ts'], { cwd: dir, timeoutMs: 300_000 })
    const label = commit.startsWith(ref) ? `baseline ${ref}` : `baseline ${ref} (${commit.slice(0, 7)})`
    return { label, cli: join(dir, 'dist/spegel.mjs'), cleanup }
  } catch (err) {
    await cleanup()
    throw err
  }
}

/** Whether the tree at `dir` declares the same packages as the working tree: package.json and the lockfile's packages. */
async function sameDependencies (dir: string): Promise<boolean> {
  const declared = async (root: string): Promise<string> => {
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as Record<string, unknown>
    let locked: unknown = null
    try {
      const lock = JSON.parse(await readFile(join(root, 'package-lock.json'), 'utf8')) as { packages?: Record<string, unknown> }
      // The root entry repeats package.json (name, version, scripts aside); the installed packages are the rest.
      const { '': _root, ...packages } = lock.packages ?? {}
      locked = packages
    } catch {}
    return JSON.stringify([pkg.dependencies ?? {}, pkg.devDependencies ?? {}, locked])
  }
  return await declared(dir) === await declared(repoRoot)
}
