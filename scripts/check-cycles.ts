// Fails when source files import each other in a circle (STYLE.md: "no import cycles"). `npm test` runs it on src/.
// Every relative import counts: static, `import type`, `export … from` and `import('…')` with a literal path.
// A type-only or lazily loaded cycle does no harm at run time, but it still ties two parts into one, which the rule
// is there to prevent. The TypeScript scanner reads the imports, so text in comments and strings is not mistaken for
// one.
import { existsSync, readdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

/** Each .ts file under dir (its absolute path), in a stable order. */
function sourceFiles (dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...sourceFiles(path))
    else if (entry.isFile() && entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path)
  }
  return out
}

/** The files under the same tree that file imports, resolved; packages and missing files are left out. */
async function importsOf (file: string, known: ReadonlySet<string>): Promise<string[]> {
  const { importedFiles } = ts.preProcessFile(await readFile(file, 'utf8'), true, true)
  const out = new Set<string>()
  for (const { fileName } of importedFiles) {
    if (!fileName.startsWith('.')) continue
    const target = resolve(dirname(file), fileName)
    if (known.has(target)) out.add(target)
    else if (known.has(target + '.ts')) out.add(target + '.ts')
    else if (known.has(join(target, 'index.ts'))) out.add(join(target, 'index.ts'))
  }
  return [...out]
}

/**
 * The import cycles among the .ts files under root, each as the paths (relative to root) around the circle with the
 * first repeated at the end. One cycle is reported per strongly connected group of files, so the list is empty
 * exactly when there is no cycle; breaking the reported one may reveal another in the same group.
 */
export async function findCycles (root: string): Promise<string[][]> {
  const files = sourceFiles(root)
  const known = new Set(files)
  const graph = new Map<string, string[]>()
  for (const file of files) graph.set(file, await importsOf(file, known))

  // Tarjan's strongly connected components, iterative so deep import chains cannot overflow the stack.
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const onStack = new Set<string>()
  const stack: string[] = []
  const groups: string[][] = []
  let next = 0
  for (const start of files) {
    if (index.has(start)) continue
    const work: Array<{ node: string, edge: number }> = [{ node: start, edge: 0 }]
    index.set(start, next); low.set(start, next); next++
    stack.push(start); onStack.add(start)
    while (work.length > 0) {
      const frame = work[work.length - 1] as { node: string, edge: number }
      const edges = graph.get(frame.node) ?? []
      if (frame.edge < edges.length) {
        const to = edges[frame.edge++] as string
        if (!index.has(to)) {
          index.set(to, next); low.set(to, next); next++
          stack.push(to); onStack.add(to)
          work.push({ node: to, edge: 0 })
        } else if (onStack.has(to)) {
          low.set(frame.node, Math.min(low.get(frame.node) as number, index.get(to) as number))
        }
        continue
      }
      work.pop()
      const parent = work[work.length - 1]
      if (parent !== undefined) low.set(parent.node, Math.min(low.get(parent.node) as number, low.get(frame.node) as number))
      if (low.get(frame.node) === index.get(frame.node)) {
        const group: string[] = []
        let member: string
        do {
          member = stack.pop() as string
          onStack.delete(member)
          group.push(member)
        } while (member !== frame.node)
        const selfImport = (graph.get(frame.node) ?? []).includes(frame.node)
        if (group.length > 1 || selfImport) groups.push(group)
      }
    }
  }

  return groups.map((group) => cycleWithin(new Set(group), graph).map((file) => relative(root, file)))
}

/** One circle through the first file of a strongly connected group (shortest, by breadth-first search). */
function cycleWithin (group: ReadonlySet<string>, graph: ReadonlyMap<string, string[]>): string[] {
  const start = [...group].sort()[0] as string
  const cameFrom = new Map<string, string>()
  const queue = [start]
  for (let i = 0; i < queue.length; i++) {
    const node = queue[i] as string
    for (const to of graph.get(node) ?? []) {
      if (!group.has(to)) continue
      if (to === start) {
        const path = [node]
        while (path[0] !== start) path.unshift(cameFrom.get(path[0] as string) as string)
        return [...path, start]
      }
      if (!cameFrom.has(to)) { cameFrom.set(to, node); queue.push(to) }
    }
  }
  return [start, start]
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(process.argv[2] ?? fileURLToPath(new URL('../src/', import.meta.url)))
  if (!existsSync(root)) {
    process.stderr.write(`check-cycles: ${root} does not exist\n`)
    process.exit(2)
  }
  const cycles = await findCycles(root)
  for (const cycle of cycles) process.stderr.write(`import cycle: ${cycle.join(' -> ')}\n`)
  if (cycles.length > 0) process.exit(1)
  process.stdout.write(`check-cycles: no import cycle in ${relative(process.cwd(), root) || '.'}\n`)
}
