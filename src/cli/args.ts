import { parseDuration } from '../util/duration.ts'

// A small command-line parser with go-arg's conventions, so every flag and env var Spegel users pass keeps working:
// `--flag value` and `--flag=value`; booleans as `--flag` or `--flag=false`; list flags take every following value up
// to the next flag (`--mirror-targets a b c`) and CSV in env vars; every flag may be set by its env var.

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

export interface ParsedCommand {
  command: string
  /** Values keyed by flag name; durations in milliseconds. Flags without a value or default are absent. */
  values: Map<string, FlagValue>
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

export function parseCommandLine (
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  commands: readonly CommandSpec[],
  globalFlags: readonly FlagSpec[],
  program = 'spegel',
): ParsedCommand {
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
    if (eq !== -1) {
      values.push(body.slice(eq + 1))
    } else if (spec.kind === 'bool') {
      const next = args[i + 1]
      if (next !== undefined && /^(true|false)$/i.test(next)) { values.push(next); i++ } else values.push('true')
    } else if (spec.kind === 'list') {
      while (i + 1 < args.length && !(args[i + 1] as string).startsWith('-')) values.push(args[++i] as string)
    } else {
      const next = args[i + 1]
      if (next === undefined) throw new UsageError(`missing value for --${name}`)
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
      const envValue = env[spec.env] as string
      texts = spec.kind === 'list' ? splitList(envValue) : [envValue]
      source = `env ${spec.env}`
    }
    if (texts === undefined && spec.default !== undefined) {
      texts = spec.kind === 'list' ? splitList(spec.default) : [spec.default]
      source = `default of --${spec.name}`
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
  return { command: command.name, values: out }
}

function splitList (text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter((s) => s !== '')
}

function convert (spec: FlagSpec, texts: string[], source: string): FlagValue {
  const text = texts[texts.length - 1] ?? ''
  switch (spec.kind) {
    case 'list':
      return texts
    case 'bool':
      if (/^(true|1|t|yes)$/i.test(text)) return true
      if (/^(false|0|f|no|)$/i.test(text)) return false
      throw new UsageError(`${source}: invalid boolean ${JSON.stringify(text)}`)
    case 'int': {
      if (!/^-?\d+$/.test(text.trim())) throw new UsageError(`${source}: invalid integer ${JSON.stringify(text)}`)
      return Number.parseInt(text, 10)
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
