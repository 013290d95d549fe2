// The floor: what moving a blob costs in Node and in Go before any registry, DHT or containerd work, and what Node
// and the chosen dependencies occupy before the daemon does anything. It tells which part of the gap to Spegel
// (bench/vs-spegel.ts) is the daemon's own and which comes with the runtime.
//
// Data path, per GiB, CPU seconds of each process, over loopback, both languages in the same run, rounds interleaved:
// - holder: sends a file from the page cache to a socket. Node: readSync into two 512 KiB buffers written in turn
//   (what the daemon's blob reads do); Go: io.Copy from the *os.File, which is sendfile (what Spegel's ServeContent
//   does).
// - proxy: copies a socket to another. Node: reads straight into three reused 512 KiB buffers (net's onread, as the
//   daemon's peer client does); Go: a 32 KiB copy loop (httputil.ReverseProxy's). Once plain, once hashing every byte
//   with SHA-256 (the daemon verifies what a peer sends; Spegel does not).
// A sink in this process reads and counts what the proxy sends (not measured).
//
// Memory, the image's Node flags and environment, 3 s after start: Node alone, and Node having loaded the chosen
// dependencies (bench/floor/deps.ts: fastify, @grpc/grpc-js with proto-loader, prom-client, libp2p with kad-dht,
// tcp, noise, yamux and identify), bundled by scripts/bundle.ts as the daemon is, without starting any of them.
//
// With --sink-mbps N the sink reads no faster than N MB/s, as containerd does while it decompresses what it pulls:
// the same bytes then take more wake-ups and smaller reads and writes.
//
//   node bench/floor.ts [--size-mib 256] [--rounds 8] [--sink-mbps 150]
//
// Needs Go (1.26) to build bench/floor/main.go. Prints markdown tables; docs/benchmarks.md records a run.
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { closeSync, openSync, readSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { run } from '../test/helpers/process.ts'
import { requireTool } from '../test/helpers/tools.ts'
import { readImageRuntime } from '../test/helpers/spegel-cluster.ts'
import { median, procStat } from './stats.ts'

const chunkBytes = 512 * 1024
const repoRoot = new URL('..', import.meta.url).pathname

if (process.argv[2] === 'holder') nodeHolder(process.argv[3] as string)
else if (process.argv[2] === 'proxy') nodeProxy(Number(process.argv[3]), process.env.FLOOR_HASH === '1')
else await main()

/** Sends the file to every connection: a read fills a free buffer, its write gives it back. */
function nodeHolder (path: string): void {
  const server = net.createServer((socket) => {
    const fd = openSync(path, 'r')
    const free = [Buffer.allocUnsafe(chunkBytes), Buffer.allocUnsafe(chunkBytes)]
    let position = 0
    let done = false
    let writing = 0
    const pump = (): void => {
      for (let buffer = free.pop(); buffer !== undefined && !done; buffer = free.pop()) {
        const n = readSync(fd, buffer, 0, chunkBytes, position)
        if (n === 0) { done = true; free.push(buffer); break }
        position += n
        writing++
        socket.write(buffer.subarray(0, n), () => { writing--; free.push(buffer); pump() })
      }
      if (done && writing === 0) { closeSync(fd); socket.end() }
    }
    socket.on('error', () => { done = true })
    pump()
  })
  server.listen(0, '127.0.0.1', () => { process.send?.((server.address() as net.AddressInfo).port) })
}

/** Copies 127.0.0.1:port to every connection, reading into whole buffers that each go back once written. */
function nodeProxy (port: number, hashed: boolean): void {
  const server = net.createServer((client) => {
    const hash = hashed ? createHash('sha256') : undefined
    const free: Buffer[] = [Buffer.allocUnsafe(chunkBytes), Buffer.allocUnsafe(chunkBytes)]
    let current: Buffer = Buffer.allocUnsafe(chunkBytes)
    let filled = 0
    let paused = false
    const handOut = (): void => {
      const buffer = current
      const data = buffer.subarray(0, filled)
      hash?.update(data)
      client.write(data, () => {
        free.push(buffer)
        if (paused) { paused = false; current = free.pop() as Buffer; upstream.resume() }
      })
      filled = 0
    }
    const upstream = net.connect({
      port,
      host: '127.0.0.1',
      onread: {
        buffer: () => current.subarray(filled),
        callback: (n: number) => {
          filled += n
          if (filled < current.length) return true
          handOut()
          const next = free.pop()
          if (next !== undefined) { current = next; return true }
          paused = true
          return false
        },
      },
    })
    upstream.on('end', () => {
      if (filled > 0) handOut()
      hash?.digest()
      client.end()
    })
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
  })
  server.listen(0, '127.0.0.1', () => { process.send?.((server.address() as net.AddressInfo).port) })
}

interface Server { child: ChildProcess, port: number }

async function startNode (args: string[], env: Record<string, string> = {}): Promise<Server> {
  const child = fork(import.meta.filename, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => { resolve(m as number) })
    child.once('exit', (code) => { reject(new Error(`node ${args[0]} exited with ${code}`)) })
  })
  return { child, port }
}

async function startGo (binary: string, args: string[], env: Record<string, string> = {}): Promise<Server> {
  const child = spawn(binary, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => { resolve(Number(d.toString().trim())) })
    child.once('exit', (code) => { reject(new Error(`go ${args[0]} exited with ${code}`)) })
  })
  return { child, port }
}

/**
 * Reads everything the proxy sends; rejects unless it is exactly `size` bytes. With `mbps`, no faster than that
 * (pausing the socket while ahead), as a containerd that decompresses and writes what it pulls reads.
 */
async function drain (port: number, size: number, mbps?: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let got = 0
    const started = performance.now()
    const socket = net.connect(port, '127.0.0.1')
    socket.on('data', (d: Buffer) => {
      got += d.length
      if (mbps === undefined) return
      const aheadMs = got / (mbps * 1e3) - (performance.now() - started)
      if (aheadMs > 1) {
        socket.pause()
        setTimeout(() => socket.resume(), aheadMs)
      }
    })
    socket.on('error', reject)
    socket.on('end', () => {
      if (got === size) resolve()
      else reject(new Error(`sink got ${got} of ${size} bytes`))
    })
  })
}

/** Starts `node` with the image's flags and environment (from the Dockerfile) on `script`, reads its memory after 3 s. */
async function idleMemory (script: string): Promise<{ rss: number, anon: number }> {
  const image = await readImageRuntime()
  const child = spawn(process.execPath, [...image.nodeFlags, script], { env: image.env, stdio: ['ignore', 'inherit', 'inherit'] })
  try {
    await new Promise((resolve) => setTimeout(resolve, 3000))
    if (child.exitCode !== null) throw new Error(`${script} exited with ${child.exitCode}`)
    return await procStat(child.pid as number)
  } finally {
    child.kill('SIGKILL')
  }
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '256' }, rounds: { type: 'string', default: '8' }, 'sink-mbps': { type: 'string' } } })
  const sinkMbps = values['sink-mbps'] !== undefined ? Number(values['sink-mbps']) : undefined
  const size = Number(values['size-mib']) * 1024 * 1024
  const rounds = Number(values.rounds)
  const go = requireTool('go', 'install Go 1.26 (https://go.dev/dl/) and put it on PATH')
  const dir = await mkdtemp(join(tmpdir(), `spegel-floor-${process.pid}-`))
  const started: ChildProcess[] = []
  try {
    const goBinary = join(dir, 'floor-go')
    await run(go, ['build', '-trimpath', '-o', goBinary, '.'], {
      cwd: new URL('./floor/', import.meta.url).pathname,
      env: { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '-mod=readonly -buildvcs=false', CGO_ENABLED: '0' },
      timeoutMs: 300_000,
    })
    const blob = join(dir, 'blob')
    await writeFile(blob, Buffer.alloc(size, 0x5a))
    await readFile(blob) // in the page cache, as a node's recently pulled layers are

    const sides = {
      node: { holder: await startNode(['holder', blob]) },
      go: { holder: await startGo(goBinary, ['holder', blob]) },
    }
    const pairs: Array<{ lang: 'node' | 'go', hashed: boolean, holder: Server, proxy: Server, holderCpu: number[], proxyCpu: number[] }> = []
    for (const lang of ['node', 'go'] as const) {
      const holder = sides[lang].holder
      started.push(holder.child)
      for (const hashed of [false, true]) {
        const env: Record<string, string> = hashed ? { FLOOR_HASH: '1' } : {}
        const proxy = lang === 'node' ? await startNode(['proxy', String(holder.port)], env) : await startGo(goBinary, ['proxy', String(holder.port)], env)
        started.push(proxy.child)
        pairs.push({ lang, hashed, holder, proxy, holderCpu: [], proxyCpu: [] })
      }
    }
    const gib = size / 1024 ** 3
    for (let r = 0; r < rounds; r++) {
      // Each round in another order, so neither language always runs on a warmer machine.
      const order = r % 2 === 0 ? pairs : [...pairs].reverse()
      for (const pair of order) {
        const h0 = (await procStat(pair.holder.child.pid as number)).cpu
        const p0 = (await procStat(pair.proxy.child.pid as number)).cpu
        await drain(pair.proxy.port, size, sinkMbps)
        pair.holderCpu.push(((await procStat(pair.holder.child.pid as number)).cpu - h0) / gib)
        pair.proxyCpu.push(((await procStat(pair.proxy.child.pid as number)).cpu - p0) / gib)
      }
    }
    const find = (lang: 'node' | 'go', hashed: boolean): typeof pairs[number] => pairs.find((p) => p.lang === lang && p.hashed === hashed) as typeof pairs[number]
    const holderOf = (lang: 'node' | 'go'): number => median([...find(lang, false).holderCpu, ...find(lang, true).holderCpu])
    const proxyOf = (lang: 'node' | 'go', hashed: boolean): number => median(find(lang, hashed).proxyCpu)
    const row = (label: string, n: number, g: number): string => `| ${label} | ${n.toFixed(2)} | ${g.toFixed(2)} | ${(n / g).toFixed(1)}× |`
    console.log(`\n${rounds} rounds of ${values['size-mib']} MiB through each pair${sinkMbps !== undefined ? `, the sink reading at most ${sinkMbps} MB/s` : ''}, node ${process.version}, ${(await run(go, ['env', 'GOVERSION'])).stdout.trim()}\n`)
    console.log('| CPU s per GiB moved (median over rounds) | Node | Go | Node ÷ Go |')
    console.log('|---|---|---|---|')
    console.log(row('holder: file to socket (Node: read + write; Go: sendfile)', holderOf('node'), holderOf('go')))
    console.log(row('proxy: socket to socket', proxyOf('node', false), proxyOf('go', false)))
    console.log(row('proxy hashing with SHA-256', proxyOf('node', true), proxyOf('go', true)))
    console.log(row('holder + plain proxy', holderOf('node') + proxyOf('node', false), holderOf('go') + proxyOf('go', false)))
    console.log(row('holder + verifying proxy (Node) against holder + plain proxy (Go, as Spegel)', holderOf('node') + proxyOf('node', true), holderOf('go') + proxyOf('go', false)))

    for (const child of started.splice(0)) child.kill('SIGKILL')

    const idle = join(dir, 'idle.mjs')
    await writeFile(idle, 'setInterval(() => {}, 1000)\n')
    // The dependencies alone (bench/floor/deps.ts), bundled by scripts/bundle.ts exactly as the daemon is.
    const deps = join(dir, 'deps')
    await run(process.execPath, ['scripts/bundle.ts', '--entry', 'bench/floor/deps.ts', '--outdir', deps], { cwd: repoRoot, timeoutMs: 300_000 })
    const bare = await Promise.all([1, 2, 3].map(async () => await idleMemory(idle)))
    const loaded = await Promise.all([1, 2, 3].map(async () => await idleMemory(join(deps, 'spegel.mjs'))))
    const mib = (xs: number[]): string => median(xs).toFixed(1)
    console.log('\n| idle memory, the image\'s Node flags, median of 3 starts | VmRSS MiB | RssAnon MiB |')
    console.log('|---|---|---|')
    console.log(`| Node, nothing loaded | ${mib(bare.map((m) => m.rss))} | ${mib(bare.map((m) => m.anon))} |`)
    console.log(`| Node with the chosen dependencies loaded (bundled), nothing started | ${mib(loaded.map((m) => m.rss))} | ${mib(loaded.map((m) => m.anon))} |`)
  } finally {
    for (const child of started) child.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
  }
}
