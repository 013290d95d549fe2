import { InvalidRangeError } from '../oci/errors.ts'

/** One `bytes=` range as sent: `a-b`, `a-` or the suffix form `-n`. */
export interface ByteRangeSpec {
  start?: number
  end?: number
  suffix?: number
}

/** A range resolved against a size: first and last byte, inclusive. */
export interface ByteRange {
  start: number
  end: number
}

const maxDigits = 15 // keeps values exact as JS numbers

/**
 * Parses a Range header. Undefined for a header to ignore (RFC 9110: another unit; several ranges, which this
 * registry does not serve): the whole content is sent. A malformed `bytes=` range throws InvalidRangeError (416, as
 * Go's http.ServeContent and the OCI conformance suite have it).
 */
export function parseRange (header: string): ByteRangeSpec | undefined {
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header)
  if (m === null) return undefined
  const spec = (m[1] ?? '').trim()
  if (spec.includes(',')) return undefined
  const r = /^(\d*)-(\d*)$/.exec(spec)
  if (r === null) throw new InvalidRangeError(`malformed range ${JSON.stringify(spec.slice(0, 40))}`)
  const [, first = '', last = ''] = r
  if (first.length > maxDigits || last.length > maxDigits) throw new InvalidRangeError('range value too large')
  if (first === '' && last === '') throw new InvalidRangeError('empty range')
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0) throw new InvalidRangeError('suffix range of zero bytes')
    return { suffix }
  }
  const start = Number(first)
  if (last === '') return { start }
  const end = Number(last)
  if (start > end) throw new InvalidRangeError('range start after its end')
  return { start, end }
}

/** Resolves a parsed range against the content size; throws InvalidRangeError when it is not satisfiable. */
export function resolveRange (spec: ByteRangeSpec, size: number): ByteRange {
  if (size <= 0) throw new InvalidRangeError('range of empty content')
  if (spec.suffix !== undefined) return { start: size - Math.min(spec.suffix, size), end: size - 1 }
  const start = spec.start ?? 0
  if (start >= size) throw new InvalidRangeError(`range starts at ${start}, content has ${size} bytes`)
  return { start, end: Math.min(spec.end ?? size - 1, size - 1) }
}

export function contentRange (range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`
}
