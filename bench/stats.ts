// Summary statistics the benchmarks print.

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
