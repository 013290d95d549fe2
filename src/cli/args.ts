import { CsvError, parseEnvList } from './csv.ts'
import { parseDuration } from '../util/duration.ts'

// A small command-line parser with go-arg's conventions (alexflint/go-arg v1.5, `(*Parser).process` and
// `captureEnvVars`), so every flag and env var Spegel users pass keeps working: `--flag value` and `--flag=value`;
// booleans as `--flag` or `--flag=false`; list flags take every following value up to the next flag
// (`--mirror-targets a b c`), and their env var is one CSV record, read as Go's encoding/csv reads it (csv.ts);
// every flag may be set by its env var, and a flag on the command line wins over its env var.
// Where we differ on purpose: a list flag given twice adds to the list (go-arg keeps only the last occurrence), and a
// boolean also takes a following `true`/`false` (`--resolve-tags false`), which go-arg would reject as a positional,
// and `--string-flag=` sets the empty string (go-arg would take the next argument as its value).

export type FlagKind = 'string' | 'bool' | 'int' | 'duration' | 'list'
export type FlagValue = string | boolean | number | string[]

export interface FlagSpec {
  /** Flag name without dashes, e.g. `registry-addr`. */
  name: string
  kind: FlagKind
  /** Environment variable, e.g. `REGISTRY_ADDR`. */
  env?: string
  /** Default as a string in flag syntax (`20ms`, `true`, `a,b`), or undefined for none. */
  default?: string
  required?: boolean
  help: string
  /** Accepted values for a string flag (compared case-insensitively, normalised to the listed spelling). */
  choices?: readonly string[]
}

export interface CommandSpec {
  name: string
  help: string
  flags: readonly FlagSpec[]
}

// The typed configuration a command receives is derived from its spec (declared `as const`), so the flag name is
// written once: `--mirror-resolve-timeout` is the field `mirrorResolveTimeoutMs`, and a field that no flag declares is
// a compile error. Fields follow Go's zero values, as Spegel's argument struct does: a flag without a value or default
// is '' (string), [] (list), false or 0.

type CamelCase<S extends string> = S extends `${infer Head}-${infer Tail}` ? `${Head}${Capitalize<CamelCase<Tail>>}` : S

/** The config field of a flag: its name in camelCase, with `Ms` after a duration (the value is in milliseconds). */
export type FieldName<F extends FlagSpec> = F['kind'] extends 'duration' ? `${CamelCase<F['name']>}Ms` : CamelCase<F['name']>

/** A string flag with choices is one of them, or '' when it has neither a default nor `required`. */
type ChoiceValue<F extends FlagSpec, C> = C | (F extends { default: string } | { required: true } ? never : '')

export type FlagValueOf<F extends FlagSpec> =
  F['kind'] extends 'bool' ? boolean
    : F['kind'] extends 'int' | 'duration' ? number
    : F['kind'] extends 'list' ? string[]
    : F extends { choices: ReadonlyArray<infer C> } ? ChoiceValue<F, C> : string

/** The configuration made of the flags `F` (a union of flag specs). */
export type ConfigOf<F extends FlagSpec> = { readonly [S in F as FieldName<S>]: FlagValueOf<S> }

/** What `parseCommandLine` returns for command `C` with the global flags `G`. */
export type ParsedCommandOf<C extends CommandSpec, G extends readonly FlagSpec[]> =
  C extends CommandSpec ? ParsedCommand<C['name'], ConfigOf<G[number] | C['flags'][number]>> : never

export interface ParsedCommand<Name extends string = string, Config = Readonly<Record<string, FlagValue>>> {
  command: Name
  /** The command's flags and the global ones, typed; the only form commands read. */
  config: Config
  /**
   * The same values keyed by flag name, as the parser found them (durations in milliseconds); flags without a value
   * or default are absent. For tests of the parser and of the chart's arguments.
   */
  values: Map<string, FlagValue>
}

/** The field a flag's value is stored under in a command's config (the run-time twin of `FieldName`). */
export function fieldName (spec: Pick<FlagSpec, 'name' | 'kind'>): string {
  const camel = spec.name.replace(/-(.)/g, (_, c: string) => c.toUpperCase())
  return spec.kind === 'duration' ? `${camel}Ms` : camel
}

/** Go's zero value of a flag's kind: what a config holds for a flag given neither a value nor a default. */
function zeroValue (kind: FlagKind): FlagValue {
  switch (kind) {
    case 'string': return ''
    case 'bool': return false
    case 'int':
    case 'duration': return 0
    case 'list': return []
  }
}

/** Bad command line or env var. The message is one line meant for the user. */
export class UsageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/** Thrown when the user asked for help; the message is the help text. */
export class HelpRequested extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'HelpRequested'
  }
}

export function parseCommandLine<const C extends readonly CommandSpec[], const G extends readonly FlagSpec[]> (
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  commands: C,
  globalFlags: G,
  program = 'spegel',
): ParsedCommandOf<C[number], G> {
  const args = [...argv]
  const raw = new Map<string, string[]>()
  let command: CommandSpec | undefined
  const flagsFor = (): readonly FlagSpec[] => [...globalFlags, ...(command?.flags ?? [])]

  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    if (arg === '-h' || arg === '--help' || arg === 'help') {
      throw new HelpRequested(usage(program, commands, globalFlags, command))
    }
    if (!arg.startsWith('-')) {
      if (command !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`)
      command = commands.find((c) => c.name === arg)
      if (command === undefined) {
        throw new UsageError(`unknown command ${JSON.stringify(arg)}; commands: ${commands.map((c) => c.name).join(', ')}`)
      }
      continue
    }
    if (arg === '--') throw new UsageError('unexpected "--"')
    const body = arg.replace(/^--?/, '')
    const eq = body.indexOf('=')
    const name = eq === -1 ? body : body.slice(0, eq)
    const spec = flagsFor().find((f) => f.name === name)
    if (spec === undefined) {
      throw new UsageError(`unknown flag --${name}${command === undefined ? ' (flags of a command go after its name)' : ` for command ${command.name}`}`)
    }
    const values: string[] = []
    // As in go-arg, an empty `--flag=` is the same as `--flag`: a list takes the values that follow, a boolean is true.
    const inline = eq === -1 ? '' : body.slice(eq + 1)
    if (inline !== '') {
      values.push(inline)
    } else if (spec.kind === 'bool') {
      const next = args[i + 1]
      if (eq === -1 && next !== undefined && /^(true|false)$/i.test(next)) { values.push(next); i++ } else values.push('true')
    } else if (spec.kind === 'list') {
      while (i + 1 < args.length && !isFlag(args[i + 1] as string) && args[i + 1] !== '--') values.push(args[++i] as string)
    } else if (eq !== -1) {
      values.push('')
    } else {
      const next = args[i + 1]
      // go-arg takes `-1` as the value of a numeric flag, and any other argument starting with `-` as the next flag.
      if (next === undefined || (isFlag(next) && !isNumeric(spec, next))) throw new UsageError(`missing value for --${name}`)
      values.push(next)
      i++
    }
    // Like go-arg, only env vars are comma-separated: an argument such as the regex `a{1,3}` stays whole.
    if (spec.kind === 'list') raw.set(name, [...(raw.get(name) ?? []), ...values])
    else raw.set(name, values)
  }
  if (command === undefined) {
    throw new UsageError(`missing command; commands: ${commands.map((c) => c.name).join(', ')} (see --help)`)
  }

  const out = new Map<string, FlagValue>()
  for (const spec of flagsFor()) {
    let source = `--${spec.name}`
    let texts = raw.get(spec.name)
    if (texts === undefined && spec.env !== undefined && env[spec.env] !== undefined) {
      source = `env ${spec.env}`
      const envValue = env[spec.env] as string
      texts = spec.kind === 'list' ? csvList(envValue, source) : [envValue]
    }
    if (texts === undefined && spec.default !== undefined) {
      source = `default of --${spec.name}`
      texts = spec.kind === 'list' ? csvList(spec.default, source) : [spec.default]
    }
    if (texts === undefined) {
      if (spec.required === true) throw new UsageError(`--${spec.name} is required${spec.env !== undefined ? ` (or env ${spec.env})` : ''}`)
      continue
    }
    out.set(spec.name, convert(spec, texts, source))
    if (spec.required === true && spec.kind === 'list' && (out.get(spec.name) as string[]).length === 0) {
      throw new UsageError(`--${spec.name} is required`)
    }
  }
  const config: Record<string, FlagValue> = {}
  for (const spec of flagsFor()) config[fieldName(spec)] = out.get(spec.name) ?? zeroValue(spec.kind)
  // The one place the spec's derived type meets the values built from it; fieldName mirrors FieldName.
  return { command: command.name, config, values: out } as unknown as ParsedCommandOf<C[number], G>
}

/** go-arg's `isFlag`: starts with `-` and is more than dashes. */
function isFlag (arg: string): boolean {
  return arg.startsWith('-') && arg.replace(/^-+/, '') !== ''
}

function isNumeric (spec: FlagSpec, text: string): boolean {
  if (spec.kind === 'int') return parseGoInt(text) !== undefined
  if (spec.kind !== 'duration') return false
  try {
    parseDuration(text)
    return true
  } catch {
    return false
  }
}

function csvList (text: string, source: string): string[] {
  try {
    return parseEnvList(text)
  } catch (err) {
    if (!(err instanceof CsvError)) throw err
    throw new UsageError(`${source}: invalid CSV (${err.message}); put a value holding , or " in double quotes and double each " inside them: "a,b","say ""hi"""`)
  }
}

/**
 * Go's `strconv.ParseInt(text, 0, 64)`, which is how go-arg parses int flags: an optional sign, then decimal, `0x`,
 * `0o`, `0b` or a leading `0` (octal), with `_` allowed between digits. Undefined where Go returns an error.
 */
export function parseGoInt (text: string): number | undefined {
  const m = /^([+-]?)(0[xX]|0[oO]|0[bB]|0(?=[0-9_]))?(.*)$/.exec(text)
  if (m === null) return undefined
  const [, sign = '', prefix = '', digits = ''] = m
  const base = prefix === '' ? 10 : /[xX]/.test(prefix) ? 16 : /[bB]/.test(prefix) ? 2 : 8
  const digit = base === 16 ? '[0-9a-fA-F]' : base === 10 ? '[0-9]' : base === 8 ? '[0-7]' : '[01]'
  // An underscore only between digits, or right after a base prefix (the prefix counts as a digit).
  const body = prefix === '' ? `${digit}+(?:_${digit}+)*` : `_?${digit}+(?:_${digit}+)*`
  if (!new RegExp(`^${body}$`).test(digits)) return undefined
  const radix = base === 16 ? '0x' : base === 8 ? '0o' : base === 2 ? '0b' : ''
  const value = BigInt(`${radix}${digits.replaceAll('_', '')}`) * (sign === '-' ? -1n : 1n)
  if (value > 0x7fffffffffffffffn || value < -0x8000000000000000n) return undefined
  return Number(value)
}

function convert (spec: FlagSpec, texts: string[], source: string): FlagValue {
  const text = texts[texts.length - 1] ?? ''
  switch (spec.kind) {
    case 'list':
      return texts
    case 'bool':
      // Go's strconv.ParseBool.
      if (/^(1|t|T|TRUE|true|True)$/.test(text)) return true
      if (/^(0|f|F|FALSE|false|False)$/.test(text)) return false
      throw new UsageError(`${source}: invalid boolean ${JSON.stringify(text)} (true or false)`)
    case 'int': {
      const n = parseGoInt(text)
      if (n === undefined) throw new UsageError(`${source}: invalid integer ${JSON.stringify(text)}`)
      return n
    }
    case 'duration':
      try {
        return parseDuration(text)
      } catch {
        throw new UsageError(`${source}: invalid duration ${JSON.stringify(text)} (examples: 20ms, 2s, 1m30s)`)
      }
    case 'string': {
      if (spec.choices === undefined) return text
      const match = spec.choices.find((c) => c.toLowerCase() === text.toLowerCase())
      if (match === undefined) throw new UsageError(`${source}: invalid value ${JSON.stringify(text)}; one of ${spec.choices.join(', ')}`)
      return match
    }
  }
}

function usage (program: string, commands: readonly CommandSpec[], globalFlags: readonly FlagSpec[], command?: CommandSpec): string {
  const lines: string[] = []
  const describe = (f: FlagSpec): string => {
    const extra = [f.env !== undefined ? `env: ${f.env}` : '', f.default !== undefined ? `default: ${f.default}` : '', f.required === true ? 'required' : '']
      .filter((s) => s !== '').join(', ')
    return `  --${f.name}${f.kind === 'bool' ? '' : f.kind === 'list' ? ' VALUE …' : ' VALUE'}\n      ${f.help}${extra !== '' ? ` [${extra}]` : ''}`
  }
  if (command === undefined) {
    lines.push(`Usage: ${program} [--log-level LEVEL] COMMAND [FLAGS]`, '', 'Commands:')
    for (const c of commands) lines.push(`  ${c.name.padEnd(14)} ${c.help}`)
  } else {
    lines.push(`Usage: ${program} ${command.name} [FLAGS]`, '', command.help, '', 'Flags:')
    for (const f of command.flags) lines.push(describe(f))
  }
  lines.push('', 'Global flags:')
  for (const f of globalFlags) lines.push(describe(f))
  return lines.join('\n')
}
