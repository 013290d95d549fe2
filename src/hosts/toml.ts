import { parse, TomlDate } from 'smol-toml'
import type { TomlTable, TomlValue } from 'smol-toml'
import type { RegistryUrl } from './url.ts'

// Rendering of containerd hosts.toml files. Our own entries follow Spegel's template byte for byte; existing entries are
// re-serialised the way Spegel's go-toml marshalling prints them (keys sorted, single-quoted literal strings, one table
// per header, a blank line before each nested table) so a Spegel user sees the same file, but unlike Spegel every key
// and every top-level setting except `server` is kept.

/** What containerd may do with a mirror host. */
export type MirrorCapability = 'pull' | 'resolve'

export interface MirrorHostsOptions {
  /** The mirrored registry (directory) this file is for. */
  registry: RegistryUrl
  /** The `server` line: by default the registry's own URL (none for `_default`); null for none. */
  server?: string | null
  /** Our mirror hosts, in priority order. */
  mirrorTargets: readonly RegistryUrl[]
  capabilities: readonly MirrorCapability[]
  /** Value of the `Authorization` header sent to every mirror target, e.g. `Basic aGVsbG86d29ybGQ=`. */
  authorization?: string
  /**
   * For `https://` mirror targets (`--registry-cert-dir`): the CA that signed the mirror's certificate and this node's
   * client certificate and key, as paths relative to the registry's directory (containerd resolves them there).
   */
  tls?: { ca: string, cert: string, key: string }
}

/** The `server` line for a registry: none for `_default`; Docker Hub's API lives at registry-1.docker.io. */
export function serverForRegistry (registry: RegistryUrl): string | undefined {
  if (registry.wildcard) {
    return undefined
  }
  return registry.href === 'https://docker.io' ? 'https://registry-1.docker.io' : registry.href
}

/** Our `[host.'…']` tables, each as one block of text without surrounding blank lines. */
export function renderMirrorHostBlocks (options: MirrorHostsOptions): string[] {
  const capabilities = formatValue([...options.capabilities])
  return options.mirrorTargets.map((target) => {
    const header = `host.${formatKey(target.href)}`
    const lines = [`[${header}]`, `capabilities = ${capabilities}`, "dial_timeout = '200ms'"]
    if (options.tls !== undefined && target.scheme === 'https') {
      lines.push(`ca = ${formatString(options.tls.ca)}`, `client = ${formatValue([[options.tls.cert, options.tls.key]])}`)
    }
    if (options.authorization !== undefined) {
      lines.push(`[${header}.header]`, `Authorization = ${formatString(options.authorization)}`)
    }
    return lines.join('\n')
  })
}

/**
 * The complete hosts.toml for one registry. `existing` (from {@link parseExistingHosts}) is appended after our
 * entries; hosts already among our targets are left out of it by the caller. The text is trimmed like Spegel's: no
 * trailing newline.
 */
export function renderHostsToml (options: MirrorHostsOptions, existing?: ExistingHosts): string {
  const topLevel: string[] = []
  const server = options.server === undefined ? serverForRegistry(options.registry) : options.server ?? undefined
  if (server !== undefined) {
    topLevel.push(`server = ${formatString(server)}`)
  }
  const sections: string[] = []
  if (topLevel.length > 0 || (existing?.topLevel.length ?? 0) > 0) {
    sections.push([...topLevel, ...(existing?.topLevel ?? [])].join('\n'))
  }
  sections.push(...renderMirrorHostBlocks(options))
  if (existing !== undefined) {
    sections.push(...existing.hosts.map((host) => host.text), ...existing.otherTables)
  }
  return sections.join('\n\n').trim()
}

/** One `[host."…"]` table of an existing hosts.toml, re-serialised. */
export interface ExistingHost {
  /** The host key, e.g. `https://mirror.example.com`. */
  key: string
  text: string
}

export interface ExistingHosts {
  /** Host tables in the order their `[host."…"]` headers appear in the file. */
  hosts: ExistingHost[]
  /** Top-level `key = value` lines to keep (everything except `server` and `host`), sorted by key. */
  topLevel: string[]
  /** Other top-level tables (e.g. `[header]` for the upstream server), re-serialised, sorted by key. */
  otherTables: string[]
  /** The existing `server` value, if any (dropped: ours names the registry itself). */
  server?: string
}

/**
 * Parses an existing hosts.toml and re-serialises what we keep. Throws smol-toml's TomlError on invalid TOML.
 *
 * Host order: Spegel (go-toml's parser) lists hosts in the order of their own `[host."…"]` headers; a host whose
 * sub-table (`[host."x".header]`) comes first still takes its place from `[host."x"]`. Hosts that have no header of
 * their own (only dotted keys, an inline table under `[host]`, or only a sub-table) follow, in document order.
 */
export function parseExistingHosts (text: string): ExistingHosts {
  const document = parse(text, { integersAsBigInt: 'asNeeded' })
  const result: ExistingHosts = { hosts: [], topLevel: [], otherTables: [] }
  const hostTable = document.host
  if (isTable(hostTable)) {
    const order: string[] = []
    for (const path of scanTableHeaders(text)) {
      const key = path[1]
      if (path.length === 2 && path[0] === 'host' && key !== undefined && !order.includes(key) && Object.hasOwn(hostTable, key)) {
        order.push(key)
      }
    }
    for (const key of Object.keys(hostTable)) {
      if (!order.includes(key)) {
        order.push(key)
      }
    }
    for (const key of order) {
      const value = hostTable[key]
      if (isTable(value)) {
        result.hosts.push({ key, text: renderTable(['host', key], value) })
      }
    }
  }
  for (const key of sortedKeys(document)) {
    const value = document[key] as TomlValue
    if (key === 'host') {
      continue
    }
    if (key === 'server' && typeof value === 'string') {
      result.server = value
      continue
    }
    if (isTable(value)) {
      result.otherTables.push(renderTable([key], value))
    } else {
      result.topLevel.push(`${formatKey(key)} = ${formatValue(value)}`)
    }
  }
  return result
}

/** `[a.'b']` followed by the table's plain keys (sorted), then each nested table after a blank line. */
function renderTable (path: readonly string[], table: TomlTable): string {
  const lines = [`[${path.map(formatKey).join('.')}]`]
  const nested: string[] = []
  for (const key of sortedKeys(table)) {
    const value = table[key] as TomlValue
    if (isTable(value)) {
      nested.push(renderTable([...path, key], value))
    } else {
      lines.push(`${formatKey(key)} = ${formatValue(value)}`)
    }
  }
  return [lines.join('\n'), ...nested].join('\n\n')
}

function sortedKeys (table: TomlTable): string[] {
  // Code-unit order, like Go's sort.Strings on the ASCII keys hosts.toml uses.
  return Object.keys(table).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
}

function isTable (value: unknown): value is TomlTable {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof TomlDate)
}

const bareKeyPattern = /^[A-Za-z0-9_-]+$/

/** A TOML key: bare when possible, otherwise quoted like a string value. */
export function formatKey (key: string): string {
  return bareKeyPattern.test(key) ? key : formatString(key)
}

// Characters that cannot appear in a TOML literal (single-quoted) string.
// eslint-disable-next-line no-control-regex
const notLiteralPattern = /['\u0000-\u0008\u000a-\u001f\u007f]/

/** A TOML string: a literal `'…'` string when it can hold the text (as go-toml does), else a basic `"…"` string. */
export function formatString (value: string): string {
  if (!notLiteralPattern.test(value)) {
    return `'${value}'`
  }
  let out = '"'
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0
    switch (char) {
      case '"': out += '\\"'; break
      case '\\': out += '\\\\'; break
      case '\b': out += '\\b'; break
      case '\t': out += '\\t'; break
      case '\n': out += '\\n'; break
      case '\f': out += '\\f'; break
      case '\r': out += '\\r'; break
      default:
        out += code < 0x20 || code === 0x7f ? `\\u${code.toString(16).padStart(4, '0')}` : char
    }
  }
  return `${out}"`
}

/**
 * A TOML value. Tables inside arrays are written inline. smol-toml gives floats with an integral value (`2.0`) as
 * plain numbers, so they come out as integers; containerd's hosts.toml has no float settings.
 */
export function formatValue (value: TomlValue): string {
  if (typeof value === 'string') {
    return formatString(value)
  }
  if (typeof value === 'boolean' || typeof value === 'bigint') {
    return String(value)
  }
  if (typeof value === 'number') {
    if (Number.isNaN(value)) {
      return 'nan'
    }
    if (!Number.isFinite(value)) {
      return value > 0 ? 'inf' : '-inf'
    }
    return String(value)
  }
  if (Array.isArray(value)) {
    return `[${value.map(formatValue).join(', ')}]`
  }
  if (value instanceof TomlDate) {
    return value.toISOString()
  }
  if (isTable(value)) {
    const entries = sortedKeys(value).map((key) => `${formatKey(key)} = ${formatValue(value[key] as TomlValue)}`)
    return entries.length === 0 ? '{}' : `{ ${entries.join(', ')} }`
  }
  // Temporal values (only with useLegacyDate: false, which we do not use).
  return String(value)
}

/**
 * Key paths of the standard table headers (`[a."b"]`, not `[[a]]`) in document order. The document has already been
 * validated by the parser; this scanner only needs to skip strings, comments and multi-line arrays correctly so that a
 * `[` inside them is not taken for a header.
 */
export function scanTableHeaders (text: string): string[][] {
  const headers: string[][] = []
  let depth = 0
  let lineStart = true
  let i = 0
  while (i < text.length) {
    const c = text[i]
    if (c === '\n') {
      if (depth === 0) {
        lineStart = true
      }
      i++
      continue
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++
      continue
    }
    if (c === '#') {
      const end = text.indexOf('\n', i)
      i = end === -1 ? text.length : end
      continue
    }
    if (lineStart && depth === 0 && c === '[') {
      const arrayTable = text[i + 1] === '['
      const start = i + (arrayTable ? 2 : 1)
      let j = start
      while (j < text.length && text[j] !== ']' && text[j] !== '\n') {
        j = text[j] === '"' || text[j] === "'" ? skipString(text, j) : j + 1
      }
      if (!arrayTable) {
        const path = parseKeyPath(text.slice(start, j))
        if (path !== undefined) {
          headers.push(path)
        }
      }
      i = j + (arrayTable ? 2 : 1)
      lineStart = false
      continue
    }
    lineStart = false
    if (c === '"' || c === "'") {
      i = skipString(text, i)
      continue
    }
    if (c === '[' || c === '{') {
      depth++
    } else if ((c === ']' || c === '}') && depth > 0) {
      depth--
    }
    i++
  }
  return headers
}

/** Index just past the string starting at `start` (any of the four TOML string forms). */
function skipString (text: string, start: number): number {
  const quote = text[start] ?? '"'
  const triple = quote.repeat(3)
  const escapes = quote === '"'
  if (text.startsWith(triple, start)) {
    let j = start + 3
    while (j < text.length) {
      if (escapes && text[j] === '\\') {
        j += 2
        continue
      }
      if (text.startsWith(triple, j)) {
        j += 3
        // Up to two quotes may directly precede the closing delimiter (`'''a'''''` is the string `a''`).
        for (let extra = 0; extra < 2 && text[j] === quote; extra++) {
          j++
        }
        return j
      }
      j++
    }
    return text.length
  }
  let j = start + 1
  while (j < text.length && text[j] !== quote && text[j] !== '\n') {
    j += escapes && text[j] === '\\' ? 2 : 1
  }
  return j + 1
}

/** The key path of a header's raw text (`host."https://x"` → ['host', 'https://x']), using the real TOML parser. */
function parseKeyPath (raw: string): string[] | undefined {
  try {
    let node: TomlValue = parse(`${raw} = 0`)
    const path: string[] = []
    while (isTable(node)) {
      const keys = Object.keys(node)
      const key = keys[0]
      if (keys.length !== 1 || key === undefined) {
        return undefined
      }
      path.push(key)
      node = node[key] as TomlValue
    }
    return path
  } catch {
    return undefined
  }
}
