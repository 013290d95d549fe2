// Unique temporary directories for tests: the name carries the pid and a random suffix so parallel runs and
// leftovers from crashed runs never collide.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

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
