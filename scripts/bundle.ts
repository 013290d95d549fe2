// Builds the daemon the image runs (see the Dockerfile): dist/spegel.mjs, the modules it loads (dist/spegel-*.mjs),
// the license comments of the bundled packages (dist/spegel.LEGAL.txt), a copy of the containerd .proto files it
// reads (dist/proto/) and kad-dht's table of key prefixes (dist/spegel-kad-prefixes.bin). `npm run bundle` runs this.
//
// What keeps the daemon's memory down here (docs/benchmarks.md, issue 2):
// - Several modules of at most ~600 KB instead of one of 2.5 MB. V8 parses a module in one go, with parser memory of
//   about 6 bytes per source byte (14 MiB for the single bundle) taken from malloc in 32 KiB pieces. glibc cannot give
//   those back once anything is allocated above them, which happened in most starts: 11 MiB more RSS for the life of
//   the process. Smaller modules parse in under 4 MiB each, and each reuses what the previous one freed.
//   esbuild splits only between entry points, so each large dependency is given an entry point of its own (splitAt);
//   those entry files are not written, only the chunks they cause.
// - Node built-ins are loaded with require(), not import. Node's ESM wrapper of a built-in reads every export when
//   the module is linked, and `node:http` has lazy getters (WebSocket, MessageEvent, CloseEvent) whose first read
//   loads undici, about 2 MiB of JavaScript heap the daemon never uses. require() hands out the module object as is.
// - kad-dht's 65,536-number table of key prefixes ships as a file read on first use (lazyPrefixList below), not as an
//   array literal whose source, boilerplate and array took about 1.8 MiB of every daemon's heap from start.
// - The output is ASCII. The source of a module is kept as a string for the life of the process, and one character
//   outside ASCII makes Node hand it to V8 as a two-byte string, twice the size. License comments, which esbuild
//   copies verbatim, go to dist/spegel.LEGAL.txt.
import { cp, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { builtinModules } from 'node:module'
import { basename, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { build, type Plugin } from 'esbuild'

const root = fileURLToPath(new URL('../', import.meta.url))
// `--entry FILE --outdir DIR` bundles another entry the same way (bench/floor.ts: the dependencies alone).
const { values: cli } = parseArgs({ options: { entry: { type: 'string' }, outdir: { type: 'string' } } })
const entry = resolve(cli.entry ?? join(root, 'src/cli/main.ts'))
const dist = resolve(cli.outdir ?? join(root, 'dist'))

/** Packages whose code goes to modules of their own (with what only they use). */
const splitAt = ['libp2p', '@libp2p/kad-dht', '@grpc/grpc-js', 'fastify']
const splitEntry = (i: number): string => `split-${i}`

const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]))

/** Turns `import … from 'node:x'` into a CommonJS module that require()s it, so esbuild emits `require('node:x')`. */
const requireBuiltins: Plugin = {
  name: 'require-builtins',
  setup (b) {
    b.onResolve({ filter: /^[a-z:_/]+$/ }, (args) => {
      if (args.kind !== 'import-statement' || args.namespace === 'builtin' || !builtins.has(args.path)) return undefined
      return { path: args.path, namespace: 'builtin' }
    })
    b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)})`, loader: 'js' }))
  },
}

/** kad-dht's table of 65,536 key prefixes, as the bundle ships it (read by the module below on first use). */
const prefixTableFile = 'spegel-kad-prefixes.bin'
const prefixListModule = /[\\/]@libp2p[\\/]kad-dht[\\/]dist[\\/]src[\\/]routing-table[\\/]generated-prefix-list\.js$/
let prefixTable: Buffer | undefined

/**
 * kad-dht's routing-table refresh looks random keys up in a 65,536-number array literal: 388 KB of source kept as a
 * string, its boilerplate and the array, about 1.8 MiB of heap in every daemon from start, for a lookup made once per
 * refresh. The bundle ships the numbers as a file (uint32 little endian) and the module reads it on first use.
 */
const lazyPrefixList: Plugin = {
  name: 'lazy-kad-prefix-list',
  setup (b) {
    b.onLoad({ filter: prefixListModule }, async (args) => {
      const { default: prefixes } = await import(pathToFileURL(args.path).href) as { default: number[] }
      if (prefixes.length !== 65536 || !prefixes.every((n) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff)) throw new Error(`${args.path}: not 65,536 uint32 values`)
      prefixTable = Buffer.alloc(prefixes.length * 4)
      prefixes.forEach((n, i) => { prefixTable!.writeUInt32LE(n, i * 4) })
      return {
        loader: 'js',
        contents: [
          "import { readFileSync } from 'node:fs'",
          'let table',
          `const at = (i) => (table ??= readFileSync(new URL(${JSON.stringify(`./${prefixTableFile}`)}, import.meta.url))).readUInt32LE(i * 4)`,
          `export default new Proxy([], { get: (target, key) => typeof key === 'string' && /^\\d+$/.test(key) && Number(key) < ${prefixes.length} ? at(Number(key)) : Reflect.get(target, key) })`,
        ].join('\n'),
      }
    })
  },
}

const readable = process.env.SPEGEL_BUNDLE_MINIFY === '0'
const result = await build({
  entryPoints: {
    spegel: entry,
    ...Object.fromEntries(splitAt.map((pkg, i) => [splitEntry(i), pkg])),
  },
  outdir: dist,
  entryNames: '[name]',
  chunkNames: 'spegel-[name]-[hash]',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  platform: 'node',
  target: 'node24',
  format: 'esm',
  // SPEGEL_BUNDLE_MINIFY=0 keeps names, lines and the `// module path` comments readable in CPU profiles
  // (bench/vs-spegel.ts --profile); such a bundle is for profiling only (not ASCII-checked).
  minify: !readable,
  // No keepNames: it wraps every named function expression in a call that defines its `name` property each time the
  // closure is created (6 % of a daemon's allocations in a pull, on hot paths such as a peer chunk's release). Nothing
  // depends on minified names: error classes set `name`, and the logger reports it (src/log).
  keepNames: false,
  charset: 'ascii',
  legalComments: 'external',
  logLevel: 'warning',
  write: false,
  absWorkingDir: root,
  // The require() that esbuild's CommonJS wrappers and the plugin above call, in every module.
  banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
  plugins: [requireBuiltins, lazyPrefixList],
})

const skipped = new Set(splitAt.map((_, i) => `${splitEntry(i)}.mjs`))
const modules = result.outputFiles.filter((f) => f.path.endsWith('.mjs') && !skipped.has(basename(f.path)))
const legal = result.outputFiles.filter((f) => f.path.endsWith('.LEGAL.txt'))
  .map((f) => f.text.replace(/^Bundled license information:\n/, '').trim()).filter((t) => t !== '')

for (const file of modules) {
  // eslint-disable-next-line no-control-regex -- the ASCII range starts at NUL on purpose
  const at = readable ? -1 : file.text.search(/[^\x00-\x7f]/)
  if (at !== -1) {
    throw new Error(`${basename(file.path)} is not ASCII at offset ${at}: ${JSON.stringify(file.text.slice(Math.max(0, at - 60), at + 20))}; ` +
      'escape the character in the source (a regular expression literal is the usual place)')
  }
}

await mkdir(dist, { recursive: true })
for (const name of await readdir(dist)) {
  if (name === 'spegel.mjs' || name.startsWith('spegel-') || name.startsWith('spegel.') || name === 'proto') {
    await rm(join(dist, name), { recursive: true, force: true })
  }
}
for (const file of modules) await writeFile(file.path, file.contents, { mode: basename(file.path) === 'spegel.mjs' ? 0o755 : 0o644 })
await writeFile(join(dist, 'spegel.LEGAL.txt'), `Bundled license information:\n\n${legal.join('\n\n')}\n`)
await cp(join(root, 'src/containerd/proto'), join(dist, 'proto'), { recursive: true })
if (prefixTable === undefined) throw new Error('kad-dht\'s generated-prefix-list.js was not bundled: check lazyPrefixList against the installed @libp2p/kad-dht')
await writeFile(join(dist, prefixTableFile), prefixTable, { mode: 0o644 })
