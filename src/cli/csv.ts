// How go-arg reads a list flag from its env var (go-arg `captureEnvVars`): a value that is empty or only whitespace
// is an empty list; anything else is `csv.NewReader(strings.NewReader(value)).Read()`, i.e. the first record of
// Go's encoding/csv with its defaults. So: `,` separates, fields are not trimmed (`a, b` is "a" and " b"), empty
// fields are kept, `"…"` protects commas and newlines and `""` inside it is a quote, a `"` elsewhere in a field is an
// error, blank lines before the record are skipped and every line after it is ignored. This is a port of
// `(*csv.Reader).readRecord` (Go 1.26) on UTF-8 bytes, so error positions are Go's byte columns.

/** A value that is not valid CSV; the message is Go's `csv.ParseError` text. */
export class CsvError extends Error {
  readonly line: number
  readonly column: number

  constructor (startLine: number, line: number, column: number, reason: string) {
    super(startLine !== line
      ? `record on line ${startLine}; parse error on line ${line}, column ${column}: ${reason}`
      : `parse error on line ${line}, column ${column}: ${reason}`)
    this.name = 'CsvError'
    this.line = line
    this.column = column
  }
}

const errBareQuote = 'bare " in non-quoted-field'
const errQuote = 'extraneous or missing " in quoted-field'

const QUOTE = 0x22
const COMMA = 0x2c
const LF = 0x0a
const CR = 0x0d

// unicode.IsSpace (Go), which is what strings.TrimSpace trims; unlike JavaScript's trim() it includes U+0085 and
// excludes U+FEFF. Escaped so the bundle stays ASCII.
const onlyGoSpace = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/

/** The list go-arg makes of an env var's value. Throws CsvError where Go's csv reader fails. */
export function parseEnvList (value: string): string[] {
  if (onlyGoSpace.test(value)) return []
  return readCsvRecord(value)
}

/** The first record of `text`, as `csv.NewReader(…).Read()` returns it with the default options. */
export function readCsvRecord (text: string): string[] {
  const input = Buffer.from(text, 'utf8')
  let offset = 0
  let numLine = 0

  // readLine: the next line including its `\n`; a `\r\n` ending becomes `\n`, a `\r` right before the end of input
  // is dropped. `eof` is true only when nothing was left to read.
  const readLine = (): { line: Buffer, eof: boolean } => {
    if (offset >= input.length) {
      numLine++
      return { line: input.subarray(input.length), eof: true }
    }
    const nl = input.indexOf(LF, offset)
    const end = nl === -1 ? input.length : nl + 1
    let line = input.subarray(offset, end)
    offset = end
    if (nl === -1 && line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1)
    numLine++
    const n = line.length
    if (n >= 2 && line[n - 2] === CR && line[n - 1] === LF) line = Buffer.concat([line.subarray(0, n - 2), Buffer.from([LF])])
    return { line, eof: false }
  }
  const lengthNL = (b: Buffer): number => (b.length > 0 && b[b.length - 1] === LF ? 1 : 0)

  // Skip empty lines.
  let { line, eof } = readLine()
  while (!eof && line.length === lengthNL(line)) ({ line, eof } = readLine())
  if (eof) return []

  const fields: Buffer[] = []
  const recLine = numLine
  let col = 1
  let lineNo = numLine
  for (;;) {
    if (line.length === 0 || line[0] !== QUOTE) {
      // Non-quoted field: up to the next comma or the end of the line.
      const i = line.indexOf(COMMA)
      const field = i >= 0 ? line.subarray(0, i) : line.subarray(0, line.length - lengthNL(line))
      const j = field.indexOf(QUOTE)
      if (j >= 0) throw new CsvError(recLine, numLine, col + j, errBareQuote)
      fields.push(field)
      if (i < 0) break
      line = line.subarray(i + 1)
      col += i + 1
      continue
    }
    // Quoted field, possibly over several lines.
    line = line.subarray(1)
    col += 1
    const parts: Buffer[] = []
    let done = false
    while (!done) {
      const i = line.indexOf(QUOTE)
      if (i >= 0) {
        parts.push(line.subarray(0, i))
        line = line.subarray(i + 1)
        col += i + 1
        if (line.length > 0 && line[0] === QUOTE) {
          parts.push(Buffer.from('"'))
          line = line.subarray(1)
          col += 1
        } else if (line.length > 0 && line[0] === COMMA) {
          line = line.subarray(1)
          col += 1
          fields.push(Buffer.concat(parts))
          done = true
        } else if (lengthNL(line) === line.length) {
          fields.push(Buffer.concat(parts))
          return decode(fields)
        } else {
          throw new CsvError(recLine, numLine, col - 1, errQuote)
        }
      } else if (line.length > 0) {
        parts.push(line)
        col += line.length
        const next = readLine()
        line = next.line
        if (line.length > 0) {
          lineNo++
          col = 1
        }
      } else {
        // The input ended inside the quotes.
        throw new CsvError(recLine, lineNo, col, errQuote)
      }
    }
  }
  return decode(fields)
}

function decode (fields: Buffer[]): string[] {
  return fields.map((f) => f.toString('utf8'))
}
