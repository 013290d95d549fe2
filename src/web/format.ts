// Text helpers for the debug page. Everything shown comes from the network (image names, peer ids, addresses), so
// every value goes through escapeHtml.

const htmlEscapes: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

export function escapeHtml (value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => htmlEscapes[c] ?? c)
}

/** Bytes in 1024 units with one decimal, as Spegel's page: `512 B`, `19.0 KB`, `1.0 GB`. */
export function formatBytes (bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1024) return `${Math.max(0, Math.round(bytes))} B`
  const units = ['KB', 'MB', 'GB', 'TB', 'PB']
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(1)} ${units[unit] ?? 'PB'}`
}

/** A duration in at most two units: `<1ms`, `12ms`, `3.4s`, `7m 8s`, `2h`, `1d 3h`. */
export function formatDuration (ms: number): string {
  if (!Number.isFinite(ms) || ms < 1) return '<1ms'
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`
  const units: Array<[string, number]> = [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]]
  const parts: string[] = []
  let rest = ms
  for (const [name, size] of units) {
    const n = Math.floor(rest / size)
    if (n > 0 || parts.length > 0) {
      if (n > 0) parts.push(`${n}${name}`)
      rest -= n * size
      if (parts.length === 2 || (parts.length === 1 && n === 0)) break
    }
  }
  return parts.slice(0, 2).join(' ')
}
