/** Thrown for a string that is not a byte size. */
export class InvalidSizeError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidSizeError'
  }
}

// Kubernetes quantity suffixes (what a chart user writes for memory), plus the common `MiB` spellings.
const multiplier: Readonly<Record<string, number>> = {
  '': 1,
  k: 1e3, K: 1e3, M: 1e6, G: 1e9,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30,
  KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30,
}

/** Parses a byte size: `25165824`, `24Mi`, `24MiB`, `1.5Gi`, `500M`. */
export function parseByteSize (text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text)
  const factor = m === null ? undefined : multiplier[m[2] ?? '']
  if (m === null || factor === undefined) throw new InvalidSizeError(`invalid size ${JSON.stringify(text)}: use bytes or a suffix like Mi or Gi (e.g. 24Mi)`)
  const bytes = Math.floor(Number(m[1]) * factor)
  if (!Number.isSafeInteger(bytes)) throw new InvalidSizeError(`size ${JSON.stringify(text)} is too large`)
  return bytes
}
