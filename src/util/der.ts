/**
 * The little of ASN.1 DER that issuing an X.509 certificate takes (RFC 5280, X.690): writing the few types a
 * certificate uses, and reading one element's extent (to lift the subject out of a CA certificate as it is).
 */

/** One encoded element: identifier octet, length, contents. */
export function element (tag: number, contents: Uint8Array): Buffer {
  const n = contents.length
  let length: Buffer
  if (n < 0x80) {
    length = Buffer.from([n])
  } else {
    const bytes: number[] = []
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256)
    length = Buffer.from([0x80 | bytes.length, ...bytes])
  }
  return Buffer.concat([Buffer.from([tag]), length, contents])
}

export const sequence = (...items: Uint8Array[]): Buffer => element(0x30, Buffer.concat(items))
export const set = (...items: Uint8Array[]): Buffer => element(0x31, Buffer.concat(items))
export const octetString = (bytes: Uint8Array): Buffer => element(0x04, bytes)
export const nullValue = (): Buffer => Buffer.from([0x05, 0x00])
export const boolean = (value: boolean): Buffer => Buffer.from([0x01, 0x01, value ? 0xff : 0x00])
export const utf8String = (text: string): Buffer => element(0x0c, Buffer.from(text, 'utf8'))
/** A BIT STRING of whole bytes, with `unused` bits at the end of the last one. */
export const bitString = (bytes: Uint8Array, unused = 0): Buffer => element(0x03, Buffer.concat([Buffer.from([unused]), bytes]))
/** Context-specific tag `n`, constructed (EXPLICIT wrappers) or primitive (IMPLICIT strings such as SAN entries). */
export const explicit = (n: number, contents: Uint8Array): Buffer => element(0xa0 | n, contents)
export const implicit = (n: number, contents: Uint8Array): Buffer => element(0x80 | n, contents)

/** A non-negative INTEGER from big-endian bytes (a leading zero keeps it positive). */
export function unsignedInteger (bytes: Uint8Array): Buffer {
  let start = 0
  while (start < bytes.length - 1 && bytes[start] === 0) start++
  const trimmed = Buffer.from(bytes.subarray(start))
  return element(0x02, (trimmed[0] ?? 0) >= 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed)
}

export function oid (dotted: string): Buffer {
  const parts = dotted.split('.').map(Number)
  const [first = 0, second = 0, ...rest] = parts
  const bytes: number[] = [first * 40 + second]
  for (const part of rest) {
    const groups: number[] = []
    for (let v = part; ; v = Math.floor(v / 128)) {
      groups.unshift(v % 128)
      if (v < 128) break
    }
    bytes.push(...groups.map((g, i) => i < groups.length - 1 ? g | 0x80 : g))
  }
  return element(0x06, Buffer.from(bytes))
}

/** UTCTime (years 1950–2049) or GeneralizedTime, to the second, as RFC 5280 wants them. */
export function time (date: Date): Buffer {
  const iso = date.toISOString() // 2026-12-07T16:35:00.000Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z' // 20261207163500Z
  const year = date.getUTCFullYear()
  return year >= 1950 && year < 2050 ? element(0x17, Buffer.from(digits.slice(2), 'latin1')) : element(0x18, Buffer.from(digits, 'latin1'))
}

/** The element starting at `offset`: its tag, where its contents start and where it ends. */
export function readElement (der: Uint8Array, offset: number): { tag: number, start: number, end: number } {
  const tag = der[offset]
  const first = der[offset + 1]
  if (tag === undefined || first === undefined) throw new RangeError('DER: element past the end')
  let length = first
  let start = offset + 2
  if (first >= 0x80) {
    const count = first & 0x7f
    if (count === 0 || count > 4) throw new RangeError('DER: unsupported length')
    length = 0
    for (let i = 0; i < count; i++) length = length * 256 + (der[start + i] ?? 0)
    start += count
  }
  const end = start + length
  if (end > der.length) throw new RangeError('DER: element longer than its input')
  return { tag, start, end }
}
