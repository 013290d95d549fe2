import { randomBytes } from 'node:crypto'
import { chmod, copyFile, lstat, mkdir, open, readdir, readlink, rename, rm, rmdir, stat, symlink } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Logger } from '../log/index.ts'
import { BackupConflictError } from './errors.ts'

// File-system steps of the hosts.toml writer and its cleanup. User files are only ever renamed, never copied and
// deleted, and nothing is deleted unless `_backup` exists (then everything outside it is ours). Every step is safe to
// re-run after a crash at any point; two transient directory names mark an interrupted operation so that a re-run
// finishes it instead of mistaking the user's files for ours:
//   `_backup.partial`   a backup in progress: user entries are being moved in; everything outside is still the user's.
//   `_backup.restoring` a restore in progress: user entries are being moved out; everything outside is the user's.
// `_backup` itself keeps Spegel's name and layout, so Spegel's own cleanup can restore a backup we made, and vice versa.

/** Directory holding the user's original configuration while ours is installed. */
export const backupDirName = '_backup'
export const partialBackupDirName = '_backup.partial'
export const restoringDirName = '_backup.restoring'

async function statOrUndefined (path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return undefined
    }
    throw error
  }
}

/** Whether `path` is a directory; throws if it exists as something else (we must not guess what it is). */
async function isDirectory (path: string): Promise<boolean> {
  const stats = await statOrUndefined(path)
  if (stats === undefined) {
    return false
  }
  if (!stats.isDirectory()) {
    throw new BackupConflictError(path, 'expected a directory')
  }
  return true
}

/** Moves every entry of `from` except `keep` into `to`, refusing to overwrite anything. */
async function moveEntries (from: string, to: string, keep: ReadonlySet<string>, logger: Pick<Logger, 'info' | 'warn'> | undefined, msg: string): Promise<void> {
  for (const name of (await readdir(from)).sort()) {
    if (keep.has(name)) {
      continue
    }
    const target = join(to, name)
    if (await statOrUndefined(target) !== undefined) {
      throw new BackupConflictError(target, 'already exists')
    }
    await rename(join(from, name), target)
    logger?.info({ path: join(from, name) }, msg)
  }
}

/** Finishes an interrupted restore or backup left by a crash, so the directory is back to a known state. */
export async function recoverInterrupted (configPath: string, logger?: Pick<Logger, 'info' | 'warn'>): Promise<void> {
  const restoring = join(configPath, restoringDirName)
  if (await isDirectory(restoring)) {
    logger?.warn({ path: restoring }, 'finishing interrupted restore of containerd host configuration')
    await moveEntries(restoring, configPath, new Set(), logger, 'recovering containerd host configuration')
    await rmdir(restoring)
  }
  const partial = join(configPath, partialBackupDirName)
  if (await isDirectory(partial)) {
    if (await isDirectory(join(configPath, backupDirName))) {
      throw new BackupConflictError(partial, `both ${backupDirName} and ${partialBackupDirName} exist`)
    }
    // Nothing of ours was written yet when a backup was interrupted: put the user's entries back where they were.
    logger?.warn({ path: partial }, 'undoing interrupted backup of containerd host configuration')
    await moveEntries(partial, configPath, new Set(), logger, 'recovering containerd host configuration')
    await rmdir(partial)
  }
}

/**
 * Moves every entry of `configPath` into `_backup`, unless `_backup` already exists (an earlier run made it; what is
 * outside it now is our own configuration). Returns whether a new backup was made.
 */
export async function backupConfiguration (configPath: string, logger?: Pick<Logger, 'info' | 'warn'>): Promise<boolean> {
  const backup = join(configPath, backupDirName)
  if (await isDirectory(backup)) {
    logger?.info({ path: backup }, 'containerd host configuration backup already exists, keeping it')
    return false
  }
  const partial = join(configPath, partialBackupDirName)
  await mkdir(partial, { recursive: true, mode: 0o755 })
  await moveEntries(configPath, partial, new Set([partialBackupDirName]), logger, 'backing up containerd host configuration')
  await rename(partial, backup)
  return true
}

/** Deletes every entry of `configPath` except `_backup` (which must exist: nothing else may be the user's). */
export async function clearConfiguration (configPath: string): Promise<void> {
  if (!await isDirectory(join(configPath, backupDirName))) {
    throw new BackupConflictError(configPath, `refusing to delete entries without ${backupDirName}`)
  }
  for (const name of await readdir(configPath)) {
    if (name !== backupDirName) {
      await rm(join(configPath, name), { recursive: true, force: true })
    }
  }
}

/**
 * Puts the backup back: deletes our entries, moves `_backup/*` back and removes `_backup`. Returns false (and changes
 * nothing) when there is no backup.
 */
export async function restoreConfiguration (configPath: string, logger?: Pick<Logger, 'info' | 'warn'>): Promise<boolean> {
  await recoverInterrupted(configPath, logger)
  const backup = join(configPath, backupDirName)
  if (!await isDirectory(backup)) {
    return false
  }
  await clearConfiguration(configPath)
  const restoring = join(configPath, restoringDirName)
  // One atomic rename marks "everything outside is the user's" before the first entry moves.
  await rename(backup, restoring)
  await moveEntries(restoring, configPath, new Set(), logger, 'recovering containerd host configuration')
  await rmdir(restoring)
  return true
}

/**
 * Writes a file so that readers see either the old or the complete new content: write a temporary file in the same
 * directory, fsync it, set the exact mode (independent of the umask), then rename it over the target.
 */
export async function writeFileAtomic (path: string, data: string | Buffer, mode: number): Promise<void> {
  const temp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`)
  const handle = await open(temp, 'wx', mode)
  try {
    try {
      await handle.writeFile(data, 'utf8')
      await handle.chmod(mode)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, path)
  } catch (error) {
    await rm(temp, { force: true })
    throw error
  }
}

/** Whether `path` is a directory (following symlinks); false when it is missing or anything else. */
export async function directoryExists (path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory()
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return false
    }
    throw error
  }
}

/** Permission bits of a file (following symlinks), or undefined when it does not exist. */
export async function fileMode (path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mode & 0o7777
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return undefined
    }
    throw error
  }
}

/**
 * Copies the tree `from` into `to` (files with their modes, directories, symlinks as symlinks), skipping the relative
 * paths in `skip`. Existing files in `to` are overwritten.
 */
export async function copyTree (from: string, to: string, skip: ReadonlySet<string>, relative = ''): Promise<void> {
  const source = join(from, relative)
  const sourceStats = await stat(source)
  await mkdir(join(to, relative), { recursive: true, mode: 0o755 })
  if (relative !== '') {
    await chmod(join(to, relative), sourceStats.mode & 0o7777)
  }
  for (const entry of await readdir(source, { withFileTypes: true })) {
    const rel = relative === '' ? entry.name : join(relative, entry.name)
    if (skip.has(rel)) {
      continue
    }
    const src = join(from, rel)
    const dst = join(to, rel)
    if (entry.isDirectory()) {
      await copyTree(from, to, skip, rel)
    } else if (entry.isSymbolicLink()) {
      await rm(dst, { force: true })
      await symlink(await readlink(src), dst)
    } else if (entry.isFile()) {
      await copyFile(src, dst)
      await chmod(dst, (await lstat(src)).mode & 0o7777)
    }
    // Sockets, FIFOs and devices have no business in a certs.d directory; they are not copied.
  }
}
