/** Thrown for a string that is not a Go duration. */
export class InvalidDurationError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidDurationError'
  }
}

// The micro sign and the Greek mu are escaped in the patterns so the bundle stays ASCII (see scripts/bundle.ts).
const unitMs: Readonly<Record<string, number>> = {
  ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000,
}

/** Parses Go's duration syntax (`20ms`, `1.5s`, `2h45m`, `0`) into milliseconds. */
export function parseDuration (text: string): number {
  const input = text.trim()
  if (input === '0' || input === '+0' || input === '-0') return 0
  const m = /^([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+$/.exec(input)
  if (m === null) throw new InvalidDurationError(`invalid duration ${JSON.stringify(text)}`)
  let total = 0
  for (const part of input.replace(/^[+-]/, '').matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/g)) {
    total += Number(part[1]) * (unitMs[part[2] ?? ''] ?? 0)
  }
  return m[1] === '-' ? -total : total
}

/** Formats milliseconds the way Go prints durations, for logs and help texts (`20ms`, `1.5s`, `2m0s`). */
export function formatDuration (ms: number): string {
  if (ms === 0) return '0s'
  if (Math.abs(ms) < 1000) return `${+ms.toFixed(3)}ms`
  const sign = ms < 0 ? '-' : ''
  let rest = Math.abs(ms) / 1000
  const h = Math.floor(rest / 3600)
  rest -= h * 3600
  const m = Math.floor(rest / 60)
  rest -= m * 60
  const s = `${+rest.toFixed(3)}s`
  if (h > 0) return `${sign}${h}h${m}m${s}`
  if (m > 0) return `${sign}${m}m${s}`
  return sign + s
}
