import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { startContainerd } from '../test/helpers/containerd.ts'
import { freePorts } from '../test/helpers/ports.ts'
const ctd = await startContainerd({})
const [rp, mp, up] = await freePorts(3)
const extra = (process.env.EXTRA_FLAGS ?? '').split(' ').filter(Boolean)
const child = spawn(process.execPath, ['--max-old-space-size-percentage=50', '--max-semi-space-size=1', '--expose-gc', ...extra, 'dist/spegel.mjs', 'registry', `--registry-addr=127.0.0.1:${rp}`, `--metrics-addr=127.0.0.1:${mp}`, `--router-addr=127.0.0.1:${up}`, `--containerd-sock=${ctd.socket}`, `--containerd-content-path=${ctd.contentPath}`, '--containerd-namespace=k8s.io', '--log-level=WARN', '--bootstrap-kind=static', `--static-bootstrap-peers=/ip4/127.0.0.1/tcp/${up}`], { env: { ...process.env, NODE_ENV: 'production', NODE_DISABLE_COMPILE_CACHE: '1', MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' }, stdio: 'inherit' })
try {
  for (let i = 0; i < 100; i++) { try { const r = await fetch(`http://127.0.0.1:${rp}/livez`); if (r.ok) break } catch {} await sleep(100) }
  console.log('waited'); await sleep(6000)
  const smaps = await readFile(`/proc/${child.pid}/smaps`, 'utf8')
  const by = new Map<string, number>(); let name = ''
  for (const line of smaps.split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line); if (m) { name = m[1] || '[anon]'; continue }
    const a = /^Anonymous:\s+(\d+) kB/.exec(line); if (a) by.set(name, (by.get(name) ?? 0) + Number(a[1]))
  }
  console.log([...by].filter(([, v]) => v > 200).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${(v / 1024).toFixed(1)} MiB ${k}`).join('\n'))
  const st = await readFile(`/proc/${child.pid}/status`, 'utf8'); console.log(st.split('\n').filter((l) => /VmRSS|RssAnon|RssFile|Threads/.test(l)).join('\n'))
  const metrics = await (await fetch(`http://127.0.0.1:${mp}/metrics`)).text()
  console.log(metrics.split('\n').filter((l) => /^nodejs_heap_space_size_used_bytes|^nodejs_heap_size_used|^nodejs_external_memory/.test(l)).map((l) => l.replace(/ (\d+)$/, (_, n) => ' ' + (Number(n) / 1048576).toFixed(2) + ' MiB')).join('\n'))
} finally { if (child.exitCode === null) { child.kill('SIGTERM'); await new Promise((r) => child.on('exit', r)) } else console.log('daemon exited', child.exitCode); await ctd.stop() }
