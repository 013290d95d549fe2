import { lstat, readdir, readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'

// Test helper: a complete, comparable picture of a directory tree.

export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink' | 'other'
  mode: number
  /** File content in hex, so binary content compares exactly. */
  content?: string
  target?: string
  mtimeMs?: number
}

export type TreeSnapshot = Record<string, TreeEntry>

export interface SnapshotOptions {
  /** Include modes and file modification times (for byte-for-byte restore checks). */
  metadata?: boolean
}

export async function snapshotTree (root: string, options: SnapshotOptions = {}, relative = ''): Promise<TreeSnapshot> {
  const result: TreeSnapshot = {}
  const names = (await readdir(join(root, relative))).sort()
  for (const name of names) {
    const rel = relative === '' ? name : `${relative}/${name}`
    const path = join(root, rel)
    const stats = await lstat(path)
    const mode = options.metadata === true ? stats.mode & 0o7777 : 0
    if (stats.isSymbolicLink()) {
      result[rel] = { type: 'symlink', mode: 0, target: await readlink(path) }
    } else if (stats.isDirectory()) {
      result[rel] = { type: 'dir', mode }
      Object.assign(result, await snapshotTree(root, options, rel))
    } else if (stats.isFile()) {
      result[rel] = { type: 'file', mode, content: (await readFile(path)).toString('hex') }
      if (options.metadata === true) {
        result[rel].mtimeMs = stats.mtimeMs
      }
    } else {
      result[rel] = { type: 'other', mode }
    }
  }
  return result
}

/** Text of every file in a snapshot, for readable assertion failures. */
export function textFiles (snapshot: TreeSnapshot): Record<string, string> {
  const result: Record<string, string> = {}
  for (const [path, entry] of Object.entries(snapshot)) {
    result[path] = entry.type === 'file' ? Buffer.from(entry.content ?? '', 'hex').toString('utf8') : `<${entry.type}>`
  }
  return result
}
