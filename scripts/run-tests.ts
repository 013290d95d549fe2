// Runs every test file, then again each file that starts a real containerd, once per other containerd the tests
// know (test/helpers/containerd.ts: Debian's 1.6 and the 2.x versions .ci/setup.d/40-containerd2.sh builds). The
// first pass uses the default (SPEGEL_TEST_CONTAINERD unset: 2.1, what current Talos releases ship). Each pass
// prints the containerd it runs and how long it took; the exit code is non-zero when any pass failed.
//
// A file "starts a real containerd" when it imports test/helpers/containerd.ts, directly or through other files under
// test/ (the cluster and pair helpers do): found by reading the imports, so a new test is covered without a list. A
// file whose first lines say `containerd: 2.x only` (Talos ships 2.x; what it tests does not exist in 1.x) is left
// out of the 1.x passes; one that says `containerd: default only` runs in the first pass only (a test of the daemon's
// own memory behaviour, which uses containerd as nothing but a content source). test/k8s is not run here: it has a
// command of its own (`npm run test:k8s`), which scripts/test.sh runs after these passes.
//
//   node scripts/run-tests.ts                     every pass
//   node scripts/run-tests.ts --containerd 2.4    only the pass(es) named (`1.6`, `2.1`, `2.4`); repeatable
//   node scripts/run-tests.ts --list              the files that start a containerd, and the containerds
import { spawnSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { defaultTestContainerd, knownContainerds } from '../test/helpers/containerd.ts'

const { values } = parseArgs({ options: { containerd: { type: 'string', multiple: true }, list: { type: 'boolean' } } })
const root = fileURLToPath(new URL('../', import.meta.url))
const testDir = join(root, 'test')
const helper = join(testDir, 'helpers/containerd.ts')

function walk (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name)
    // test/k8s brings up a whole Kubernetes cluster: `npm run test:k8s` runs it once, after these passes.
    if (e.isDirectory()) return e.name === 'go' || e.name === 'node_modules' || path === join(testDir, 'k8s') ? [] : walk(path)
    return e.name.endsWith('.ts') ? [path] : []
  })
}

const sources = walk(testDir)
const importsOf = new Map(sources.map((file) => {
  const text = readFileSync(file, 'utf8')
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+\.ts)['"]/g)].map((m) => resolve(dirname(file), m[1]!))
  return [file, specs]
}))
const usesContainerd = new Map<string, boolean>()
function reaches (file: string, seen = new Set<string>()): boolean {
  const known = usesContainerd.get(file)
  if (known !== undefined) return known
  if (file === helper) return true
  if (seen.has(file)) return false
  seen.add(file)
  const found = (importsOf.get(file) ?? []).some((dep) => reaches(dep, seen))
  usesContainerd.set(file, found)
  return found
}

const testFiles = sources.filter((f) => f.endsWith('.test.ts')).sort()
const containerdFiles = testFiles.filter((f) => reaches(f))
const containerds = knownContainerds()
const first = containerds.find((c) => c.name === defaultTestContainerd)
if (first === undefined) throw new Error(`the default containerd ${defaultTestContainerd} is not among ${containerds.map((c) => c.name).join(', ')}`)
const head = (file: string): string => readFileSync(file, 'utf8').split('\n').slice(0, 12).join('\n')
const onlyTwo = (file: string): boolean => /containerd: 2\.x only/.test(head(file))
const onlyDefault = (file: string): boolean => /containerd: default only/.test(head(file))
const passes = [
  { containerd: first, files: testFiles, what: 'every test' },
  ...containerds.filter((c) => c !== first).map((containerd) => {
    const files = containerdFiles.filter((f) => !onlyDefault(f) && (containerd.major >= 2 || !onlyTwo(f)))
    return { containerd, files, what: `the ${files.length} files that start a containerd` }
  }),
].filter((p) => values.containerd === undefined || values.containerd.includes(p.containerd.name))
for (const name of values.containerd ?? []) {
  if (!containerds.some((c) => c.name === name)) throw new Error(`--containerd ${name}: not one of ${containerds.map((c) => c.name).join(', ')}`)
}
if (values.list === true) {
  console.log(`containerds: ${containerds.map((c) => `${c.name} (${c.binary})`).join(', ')}; default ${defaultTestContainerd}`)
  for (const f of containerdFiles) console.log(`${relative(root, f)}${onlyTwo(f) ? '  (2.x only)' : onlyDefault(f) ? '  (default only)' : ''}`)
  process.exit(0)
}

function versionOf (binary: string): string {
  const out = spawnSync(binary, ['--version'], { encoding: 'utf8' })
  if (out.error !== undefined || out.status !== 0) return `${binary}: not runnable (${out.error?.message ?? out.stderr.trim()}); bash .ci/setup.sh installs it`
  return out.stdout.trim()
}

const results: Array<{ label: string, ok: boolean, seconds: number }> = []
for (const pass of passes) {
  const label = `${pass.what} on containerd ${pass.containerd.name}`
  console.log(`\n==== ${label}: ${versionOf(pass.containerd.binary)}`)
  if (pass.files !== testFiles) console.log(pass.files.map((f) => `  ${relative(root, f)}`).join('\n'))
  const started = performance.now()
  const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=600000', ...pass.files.map((f) => relative(root, f))], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, SPEGEL_TEST_CONTAINERD: pass.containerd.name },
  })
  const seconds = Math.round((performance.now() - started) / 1000)
  results.push({ label, ok: run.status === 0, seconds })
  console.log(`==== ${label}: ${run.status === 0 ? 'passed' : 'FAILED'} in ${seconds} s`)
}
console.log('\n==== summary')
for (const r of results) console.log(`  ${r.ok ? 'passed' : 'FAILED'}  ${r.seconds} s  ${r.label}`)
process.exit(results.every((r) => r.ok) ? 0 : 1)
