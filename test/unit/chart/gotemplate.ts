import { stringify } from 'yaml'

// A small renderer for the subset of Go templates + Sprig that the chart uses, so the tests can render the chart
// without helm (which these machines do not have). It is strict where helm is strict (a field of a missing value is an
// error, an unknown function is an error) so a template that renders here has the same shape under helm; the helm
// workflow (.github/workflows/chart.yaml) checks the real thing.

export class TemplateError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TemplateError'
  }
}

/** Raised by the template's own `fail` / `required`: what helm prints as the install error. */
export class TemplateFailError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TemplateFailError'
  }
}

type Value = unknown
type Fn = (...args: Value[]) => Value

interface TextNode { kind: 'text', text: string }
interface OutputNode { kind: 'output', pipe: Pipe, line: number }
interface AssignNode { kind: 'assign', name: string, declare: boolean, pipe: Pipe, line: number }
interface IfNode { kind: 'if', branches: Array<{ cond: Pipe, body: Node[] }>, otherwise: Node[] }
interface ScopeNode { kind: 'range' | 'with', pipe: Pipe, body: Node[], otherwise: Node[], line: number }
type Node = TextNode | OutputNode | AssignNode | IfNode | ScopeNode

type Term =
  | { kind: 'field', base: '.' | string, path: string[] } // base '.' = dot, '$name' = variable
  | { kind: 'literal', value: Value }
  | { kind: 'ident', name: string }
  | { kind: 'paren', pipe: Pipe }
type Pipe = Term[][] // commands separated by `|`, each a list of terms

interface Action { body: string, line: number }
type Token = { kind: 'text', text: string } | { kind: 'action', action: Action }

/** Splits a template into text and actions, applying `{{-` / `-}}` whitespace trimming. */
export function tokenize (source: string, name: string): Token[] {
  const tokens: Token[] = []
  let pos = 0
  let trimNext = false
  while (pos < source.length) {
    const open = source.indexOf('{{', pos)
    let text = open === -1 ? source.slice(pos) : source.slice(pos, open)
    if (trimNext) text = text.replace(/^\s+/, '')
    if (open === -1) {
      tokens.push({ kind: 'text', text })
      break
    }
    const close = source.indexOf('}}', open + 2)
    if (close === -1) throw new TemplateError(`${name}: unclosed action at line ${lineOf(source, open)}`)
    let body = source.slice(open + 2, close)
    if (/^-\s/.test(body)) {
      text = text.replace(/\s+$/, '')
      body = body.slice(1)
    }
    trimNext = /\s-$/.test(body)
    if (trimNext) body = body.slice(0, -1)
    tokens.push({ kind: 'text', text })
    tokens.push({ kind: 'action', action: { body: body.trim(), line: lineOf(source, open) } })
    pos = close + 2
  }
  return tokens
}

function lineOf (source: string, index: number): number {
  return source.slice(0, index).split('\n').length
}

/** Parses a template into its nodes; `define` blocks are returned separately. */
export function parseTemplate (source: string, name: string): { nodes: Node[], defines: Map<string, Node[]> } {
  const tokens = tokenize(source, name)
  const defines = new Map<string, Node[]>()
  let i = 0

  // Parses until one of the terminators (else / end); returns the nodes and the terminating action.
  const parseList = (terminators: readonly string[]): { nodes: Node[], end: Action | undefined } => {
    const nodes: Node[] = []
    while (i < tokens.length) {
      const token = tokens[i++] as Token
      if (token.kind === 'text') {
        if (token.text !== '') nodes.push({ kind: 'text', text: token.text })
        continue
      }
      const { body, line } = token.action
      const where = `${name}:${line}`
      if (body.startsWith('/*')) {
        if (!body.endsWith('*/')) throw new TemplateError(`${where}: unterminated comment`)
        continue
      }
      const keyword = /^(if|else if|else|end|range|with|define|block|template)\b/.exec(body)?.[1]
      if (keyword === 'end' || keyword === 'else' || keyword === 'else if') {
        if (!terminators.includes(keyword)) throw new TemplateError(`${where}: unexpected {{${body}}}`)
        return { nodes, end: token.action }
      }
      if (keyword === 'if') {
        const branches: Array<{ cond: Pipe, body: Node[] }> = []
        let cond = parsePipe(body.slice(2), where)
        let otherwise: Node[] = []
        for (;;) {
          const part = parseList(['else if', 'else', 'end'])
          branches.push({ cond, body: part.nodes })
          if (part.end === undefined) throw new TemplateError(`${where}: {{if}} not closed by {{end}}`)
          if (part.end.body === 'end') break
          if (part.end.body.startsWith('else if')) {
            cond = parsePipe(part.end.body.slice(7), `${name}:${part.end.line}`)
            continue
          }
          const rest = parseList(['end'])
          if (rest.end === undefined) throw new TemplateError(`${where}: {{if}} not closed by {{end}}`)
          otherwise = rest.nodes
          break
        }
        nodes.push({ kind: 'if', branches, otherwise })
      } else if (keyword === 'range' || keyword === 'with') {
        if (/^\w+\s+\$\w+\s*(,\s*\$\w+\s*)?:=/.test(body)) throw new TemplateError(`${where}: ${keyword} with variables is not supported by this renderer`)
        const pipe = parsePipe(body.slice(keyword.length), where)
        const part = parseList(['else', 'end'])
        if (part.end === undefined) throw new TemplateError(`${where}: {{${keyword}}} not closed by {{end}}`)
        let otherwise: Node[] = []
        if (part.end.body === 'else') {
          const rest = parseList(['end'])
          if (rest.end === undefined) throw new TemplateError(`${where}: {{${keyword}}} not closed by {{end}}`)
          otherwise = rest.nodes
        }
        nodes.push({ kind: keyword, pipe, body: part.nodes, otherwise, line })
      } else if (keyword === 'define') {
        const m = /^define\s+"([^"]+)"$/.exec(body)
        if (m === null) throw new TemplateError(`${where}: bad define`)
        const part = parseList(['end'])
        if (part.end === undefined) throw new TemplateError(`${where}: {{define}} not closed by {{end}}`)
        defines.set(m[1] as string, part.nodes)
      } else if (keyword !== undefined) {
        throw new TemplateError(`${where}: {{${keyword}}} is not supported by this renderer`)
      } else {
        const assign = /^(\$\w+)\s*(:=|=)\s*([\s\S]+)$/.exec(body)
        if (assign !== null) {
          nodes.push({ kind: 'assign', name: assign[1] as string, declare: assign[2] === ':=', pipe: parsePipe(assign[3] as string, where), line })
        } else {
          nodes.push({ kind: 'output', pipe: parsePipe(body, where), line })
        }
      }
    }
    if (terminators.length > 0) return { nodes, end: undefined }
    return { nodes, end: undefined }
  }

  const { nodes } = parseList([])
  return { nodes, defines }
}

type ExprToken = { t: 'str' | 'num' | 'word' | 'bool' | 'nil', v: string } | { t: '(' | ')' | '|', v?: undefined }

function lexExpr (text: string, where: string): ExprToken[] {
  const out: ExprToken[] = []
  let i = 0
  while (i < text.length) {
    const c = text[i] as string
    if (/\s/.test(c)) { i++; continue }
    if (c === '(' || c === ')' || c === '|') { out.push({ t: c }); i++; continue }
    if (c === '"') {
      let j = i + 1
      let s = ''
      while (j < text.length && text[j] !== '"') {
        if (text[j] === '\\') {
          const n = text[j + 1]
          s += n === 'n' ? '\n' : n === 't' ? '\t' : (n ?? '')
          j += 2
        } else s += text[j++]
      }
      if (j >= text.length) throw new TemplateError(`${where}: unterminated string`)
      out.push({ t: 'str', v: s })
      i = j + 1
      continue
    }
    if (c === '`') {
      const j = text.indexOf('`', i + 1)
      if (j === -1) throw new TemplateError(`${where}: unterminated raw string`)
      out.push({ t: 'str', v: text.slice(i + 1, j) })
      i = j + 1
      continue
    }
    const m = /^(-?\d+(\.\d+)?|[$.]?[\w.$]*)/.exec(text.slice(i))
    const word = m?.[0] ?? ''
    if (word === '') throw new TemplateError(`${where}: unexpected ${JSON.stringify(c)} in ${JSON.stringify(text)}`)
    if (/^-?\d/.test(word)) out.push({ t: 'num', v: word })
    else if (word === 'true' || word === 'false') out.push({ t: 'bool', v: word })
    else if (word === 'nil') out.push({ t: 'nil', v: word })
    else out.push({ t: 'word', v: word })
    i += word.length
  }
  return out
}

function parsePipe (text: string, where: string): Pipe {
  const tokens = lexExpr(text, where)
  let i = 0
  const pipe = (): Pipe => {
    const commands: Term[][] = [[]]
    while (i < tokens.length) {
      const tok = tokens[i] as ExprToken
      if (tok.t === ')') break
      i++
      if (tok.t === '|') { commands.push([]); continue }
      const current = commands[commands.length - 1] as Term[]
      if (tok.t === '(') {
        const inner = pipe()
        if (tokens[i]?.t !== ')') throw new TemplateError(`${where}: missing )`)
        i++
        current.push({ kind: 'paren', pipe: inner })
      } else if (tok.t === 'str') current.push({ kind: 'literal', value: tok.v })
      else if (tok.t === 'num') current.push({ kind: 'literal', value: Number(tok.v) })
      else if (tok.t === 'bool') current.push({ kind: 'literal', value: tok.v === 'true' })
      else if (tok.t === 'nil') current.push({ kind: 'literal', value: null })
      else {
        const w = tok.v ?? ''
        if (w === '.') current.push({ kind: 'field', base: '.', path: [] })
        else if (w.startsWith('.')) current.push({ kind: 'field', base: '.', path: w.slice(1).split('.') })
        else if (w.startsWith('$')) {
          const [base, ...path] = w.split('.')
          current.push({ kind: 'field', base: base as string, path })
        } else current.push({ kind: 'ident', name: w })
      }
    }
    if (commands.some((c) => c.length === 0)) throw new TemplateError(`${where}: empty command in ${JSON.stringify(text)}`)
    return commands
  }
  const result = pipe()
  if (i !== tokens.length) throw new TemplateError(`${where}: unexpected ) in ${JSON.stringify(text)}`)
  return result
}

/** Go template truthiness. */
export function truthy (v: Value): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false
  if (Array.isArray(v)) return v.length > 0
  if (typeof v === 'object') return Object.keys(v).length > 0
  return true
}

/** How Go's text/template prints a value (helm replaces `<no value>` with nothing). */
export function print (v: Value): string {
  if (v === undefined || v === null) return ''
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  if (Array.isArray(v)) return `[${v.map(print).join(' ')}]`
  if (typeof v === 'object') {
    const o = v as Record<string, Value>
    return `map[${Object.keys(o).sort().map((k) => `${k}:${print(o[k])}`).join(' ')}]`
  }
  return String(v)
}

function goQuote (s: string): string {
  return JSON.stringify(s)
}

function toYaml (v: Value): string {
  if (v === undefined || v === null) return 'null'
  return stringify(v, { lineWidth: 0 }).replace(/\n$/, '')
}

function indentLines (n: number, s: string): string {
  const pad = ' '.repeat(n)
  return s.split('\n').map((l) => pad + l).join('\n')
}

function sprintf (format: string, args: Value[]): string {
  let k = 0
  return format.replace(/%([sdvq%])/g, (_, verb: string) => {
    if (verb === '%') return '%'
    const a = args[k++]
    if (verb === 'q') return goQuote(print(a))
    if (verb === 'd') return String(Math.trunc(Number(a)))
    return print(a)
  })
}

export interface RenderContext {
  Values: Record<string, Value>
  Release: { Name: string, Namespace: string, Service: string, IsInstall?: boolean }
  Chart: { Name: string, Version: string, AppVersion?: string }
  Capabilities: { APIVersions: string[] }
  /** Files of the chart by relative path (for .Files.Get). */
  Files: Record<string, string>
}

export class ChartRenderer {
  readonly #defines = new Map<string, Node[]>()
  readonly #templates = new Map<string, Node[]>()

  /** Adds a template file; `define` blocks become available to `include` from every template. */
  add (name: string, source: string): void {
    const { nodes, defines } = parseTemplate(source, name)
    for (const [k, v] of defines) this.#defines.set(k, v)
    this.#templates.set(name, nodes)
  }

  names (): string[] {
    return [...this.#templates.keys()]
  }

  render (name: string, ctx: RenderContext): string {
    const nodes = this.#templates.get(name)
    if (nodes === undefined) throw new TemplateError(`no template ${name}`)
    const root = this.#root(ctx)
    return this.#exec(nodes, root, new Map([['$', root]]), name)
  }

  #root (ctx: RenderContext): Record<string, Value> {
    return {
      Values: ctx.Values,
      Release: ctx.Release,
      Chart: ctx.Chart,
      Capabilities: { APIVersions: { Has: (v: Value) => ctx.Capabilities.APIVersions.includes(print(v)) } },
      Files: { Get: (p: Value) => ctx.Files[print(p)] ?? '' },
    }
  }

  #exec (nodes: Node[], dot: Value, vars: Map<string, Value>, name: string): string {
    let out = ''
    for (const node of nodes) {
      switch (node.kind) {
        case 'text':
          out += node.text
          break
        case 'output':
          out += print(this.#pipe(node.pipe, dot, vars, `${name}:${node.line}`))
          break
        case 'assign':
          if (!node.declare && !vars.has(node.name)) throw new TemplateError(`${name}:${node.line}: undefined variable ${node.name}`)
          vars.set(node.name, this.#pipe(node.pipe, dot, vars, `${name}:${node.line}`))
          break
        case 'if': {
          const branch = node.branches.find((b) => truthy(this.#pipe(b.cond, dot, vars, name)))
          out += this.#exec(branch?.body ?? node.otherwise, dot, vars, name)
          break
        }
        case 'with': {
          const v = this.#pipe(node.pipe, dot, vars, `${name}:${node.line}`)
          out += truthy(v) ? this.#exec(node.body, v, vars, name) : this.#exec(node.otherwise, dot, vars, name)
          break
        }
        case 'range': {
          const v = this.#pipe(node.pipe, dot, vars, `${name}:${node.line}`)
          let items: Value[]
          if (Array.isArray(v)) items = v
          else if (v !== null && typeof v === 'object') items = Object.keys(v).sort().map((k) => (v as Record<string, Value>)[k])
          else if (v === undefined || v === null) items = []
          else throw new TemplateError(`${name}:${node.line}: range can't iterate over ${print(v)}`)
          if (items.length === 0) out += this.#exec(node.otherwise, dot, vars, name)
          for (const item of items) out += this.#exec(node.body, item, vars, name)
          break
        }
      }
    }
    return out
  }

  #pipe (pipe: Pipe, dot: Value, vars: Map<string, Value>, where: string): Value {
    let piped: Value
    let first = true
    for (const command of pipe) {
      const extra = first ? [] : [piped]
      piped = this.#command(command, dot, vars, where, extra)
      first = false
    }
    return piped
  }

  #command (terms: Term[], dot: Value, vars: Map<string, Value>, where: string, extra: Value[]): Value {
    const [head, ...rest] = terms
    if (head === undefined) throw new TemplateError(`${where}: empty command`)
    const args = (): Value[] => [...rest.map((t) => this.#term(t, dot, vars, where)), ...extra]
    if (head.kind === 'ident') return this.#call(head.name, args(), dot, where)
    const v = this.#term(head, dot, vars, where)
    if (typeof v === 'function') return (v as Fn)(...args())
    if (rest.length > 0 || extra.length > 0) throw new TemplateError(`${where}: can't give arguments to a non-function`)
    return v
  }

  #term (term: Term, dot: Value, vars: Map<string, Value>, where: string): Value {
    switch (term.kind) {
      case 'literal': return term.value
      case 'paren': return this.#pipe(term.pipe, dot, vars, where)
      case 'ident': return this.#call(term.name, [], dot, where)
      case 'field': {
        let v: Value
        if (term.base === '.') v = dot
        else {
          if (!vars.has(term.base)) throw new TemplateError(`${where}: undefined variable ${term.base}`)
          v = vars.get(term.base)
        }
        let path = term.base === '.' ? '' : term.base
        for (const key of term.path) {
          if (v === undefined || v === null || typeof v !== 'object' || Array.isArray(v)) {
            throw new TemplateError(`${where}: nil pointer evaluating ${path || '.'}.${key}`)
          }
          v = (v as Record<string, Value>)[key]
          path += `.${key}`
        }
        return v
      }
    }
  }

  #call (fn: string, args: Value[], dot: Value, where: string): Value {
    const str = (i: number): string => print(args[i])
    const need = (n: number): void => {
      if (args.length !== n) throw new TemplateError(`${where}: ${fn} wants ${n} arguments, got ${args.length}`)
    }
    switch (fn) {
      case 'include': {
        need(2)
        const body = this.#defines.get(str(0))
        if (body === undefined) throw new TemplateError(`${where}: no template ${JSON.stringify(str(0))}`)
        return this.#exec(body, args[1], new Map([['$', args[1]]]), `define ${str(0)}`)
      }
      case 'default': need(2); return truthy(args[1]) ? args[1] : args[0]
      case 'trunc': need(2); return str(1).slice(0, Number(args[0]))
      case 'trimSuffix': need(2); return str(1).endsWith(str(0)) ? str(1).slice(0, str(1).length - str(0).length) : str(1)
      case 'contains': need(2); return str(1).includes(str(0))
      case 'replace': need(3); return str(2).split(str(0)).join(str(1))
      case 'printf': return sprintf(str(0), args.slice(1))
      case 'quote': return args.filter((a) => a !== undefined && a !== null).map((a) => goQuote(print(a))).join(' ')
      case 'toString': need(1); return print(args[0])
      case 'toYaml': need(1); return toYaml(args[0])
      case 'toJson': need(1); return JSON.stringify(args[0] ?? null)
      case 'nindent': need(2); return '\n' + indentLines(Number(args[0]), str(1))
      case 'indent': need(2); return indentLines(Number(args[0]), str(1))
      case 'and': { let last: Value = true; for (const a of args) { last = a; if (!truthy(a)) return a } return last }
      case 'or': { for (const a of args) if (truthy(a)) return a; return args[args.length - 1] }
      case 'not': need(1); return !truthy(args[0])
      case 'eq': need(2); return args[0] === args[1]
      case 'ne': need(2); return args[0] !== args[1]
      case 'empty': need(1); return !truthy(args[0])
      case 'list': return [...args]
      case 'append': need(2); return [...(args[0] as Value[]), args[1]]
      case 'join': need(2); return (args[1] as Value[]).map(print).join(str(0))
      case 'hasKey': need(2); return args[0] !== null && typeof args[0] === 'object' && Object.hasOwn(args[0], str(1))
      case 'fail': need(1); throw new TemplateFailError(str(0))
      case 'required': need(2); if (!truthy(args[1])) throw new TemplateFailError(str(0)); return args[1]
      default:
        void dot
        throw new TemplateError(`${where}: function ${JSON.stringify(fn)} not defined (unsupported by this renderer)`)
    }
  }
}
