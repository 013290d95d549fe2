// Summary statistics the benchmarks print, and what they read of a process.
import { readFile } from 'node:fs/promises'

/** The median; NaN for no values. */
export function median (xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  if (s.length === 0) return NaN
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** The q-quantile (0 < q ≤ 1) by the nearest-rank method: p99 is quantile(xs, 0.99); NaN for no values. */
export function quantile (xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN
}

/** Milliseconds as seconds with two decimals. */
export const secs = (ms: number): string => (ms / 1000).toFixed(2)

/** A process's CPU seconds so far (user + system, from /proc, 10 ms ticks) and its VmRSS and RssAnon in MiB. */
export async function procStat (pid: number): Promise<{ cpu: number, rss: number, anon: number }> {
  const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/status`, 'utf8')])
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0)
  return { cpu: (Number(fields[11]) + Number(fields[12])) / 100, rss: kib('VmRSS') / 1024, anon: kib('RssAnon') / 1024 }
}
