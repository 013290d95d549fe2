// Unique temporary directories for tests: the name carries the pid and a random suffix so parallel runs and
// leftovers from crashed runs never collide.
import { execFile } from 'node:child_process'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const exec = promisify(execFile)

export interface TempDir {
  path: string
  /** Removes the directory recursively; safe to call more than once. */
  cleanup: () => Promise<void>
}

export async function makeTempDir (prefix = 'spegel-test'): Promise<TempDir> {
  const safe = prefix.replace(/[^a-zA-Z0-9._-]/g, '-')
  const path = await mkdtemp(join(tmpdir(), `${safe}-${process.pid}-`))
  let removed = false
  return {
    path,
    cleanup: async () => {
      if (removed) return
      removed = true
      // Retries cover files a just-killed process still had open.
      await rm(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
    },
  }
}

/**
 * A directory that cannot be written: a read-only tmpfs as root (root ignores permission bits), mode 0555 otherwise.
 * `prepare` runs while it is still writable. Unmounted and removed after the test, also on failure.
 */
export async function readOnlyDir (t: { after: (fn: () => Promise<void>) => void }, prepare: (dir: string) => Promise<void> = async () => {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `spegel-ro-${process.pid}-`))
  let mounted = false
  t.after(async () => {
    if (mounted) await exec('umount', [dir])
    else await chmod(dir, 0o755)
    await rm(dir, { recursive: true, force: true })
  })
  if (process.getuid?.() === 0) {
    try {
      await exec('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs', dir])
    } catch (err) {
      throw new Error(`this test mounts a read-only tmpfs and needs root with CAP_SYS_ADMIN (run the suite as root, outside an unprivileged container): ${(err as Error).message}`, { cause: err })
    }
    mounted = true
    await prepare(dir)
    await exec('mount', ['-o', 'remount,ro', dir])
  } else {
    await prepare(dir)
    await chmod(dir, 0o555)
  }
  return dir
}
