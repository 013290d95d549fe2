// A validator for the subset of JSON Schema draft-07 that chart/values.schema.json uses (type, properties, required,
// enum, pattern, minLength, minimum, maximum, items, maxItems, additionalProperties). It refuses schema keywords it
// does not implement, so the schema cannot silently grow beyond what the tests check. Helm validates with a full
// implementation; the messages here name the value's path the same way (`spegel.logLevel`).

export interface Schema {
  $schema?: string
  title?: string
  description?: string
  type?: string | string[]
  properties?: Record<string, Schema>
  required?: string[]
  enum?: unknown[]
  pattern?: string
  minLength?: number
  minimum?: number
  maximum?: number
  items?: Schema
  maxItems?: number
  additionalProperties?: boolean | Schema
}

const known = new Set(['$schema', 'title', 'description', 'type', 'properties', 'required', 'enum', 'pattern', 'minLength',
  'minimum', 'maximum', 'items', 'maxItems', 'additionalProperties'])

export class UnsupportedSchemaError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UnsupportedSchemaError'
  }
}

function typeOf (v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number'
  return typeof v
}

function matchesType (v: unknown, type: string): boolean {
  const actual = typeOf(v)
  if (type === 'number') return actual === 'number' || actual === 'integer'
  return actual === type
}

/** Returns one message per violation, each starting with the dotted path of the offending value. */
export function validate (schema: Schema, value: unknown, path = ''): string[] {
  for (const k of Object.keys(schema)) {
    if (!known.has(k)) throw new UnsupportedSchemaError(`schema keyword ${k} at ${path || '(root)'} is not supported by the test validator`)
  }
  const where = path === '' ? '(root)' : path
  const errors: string[] = []
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type]
    if (!types.some((t) => matchesType(value, t))) {
      return [`${where}: expected ${types.join(' or ')}, got ${typeOf(value)}`]
    }
  }
  if (schema.enum !== undefined && !schema.enum.some((e) => e === value)) {
    errors.push(`${where}: must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${JSON.stringify(value)}`)
  }
  if (typeof value === 'string') {
    if (schema.pattern !== undefined && !new RegExp(schema.pattern).test(value)) {
      errors.push(`${where}: ${JSON.stringify(value)} does not match ${schema.pattern}`)
    }
    if (schema.minLength !== undefined && [...value].length < schema.minLength) {
      errors.push(`${where}: must be at least ${schema.minLength} characters long`)
    }
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${where}: must be >= ${schema.minimum}, got ${value}`)
    if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${where}: must be <= ${schema.maximum}, got ${value}`)
  }
  if (Array.isArray(value)) {
    if (schema.maxItems !== undefined && value.length > schema.maxItems) errors.push(`${where}: at most ${schema.maxItems} items, got ${value.length}`)
    if (schema.items !== undefined) {
      value.forEach((item, i) => errors.push(...validate(schema.items as Schema, item, `${path}[${i}]`)))
    }
  }
  if (typeOf(value) === 'object') {
    const obj = value as Record<string, unknown>
    for (const r of schema.required ?? []) {
      if (!(r in obj)) errors.push(`${where}: missing required property ${r}`)
    }
    for (const [k, v] of Object.entries(obj)) {
      const child = path === '' ? k : `${path}.${k}`
      const sub = schema.properties?.[k]
      if (sub !== undefined) errors.push(...validate(sub, v, child))
      else if (schema.additionalProperties === false) errors.push(`${where}: additional property ${k} is not allowed`)
      else if (typeof schema.additionalProperties === 'object') errors.push(...validate(schema.additionalProperties, v, child))
    }
  }
  return errors
}

/** Walks every sub-schema, calling fn with its path (for checks on the schema itself). */
export function walkSchema (schema: Schema, fn: (s: Schema, path: string) => void, path = ''): void {
  fn(schema, path)
  for (const [k, s] of Object.entries(schema.properties ?? {})) walkSchema(s, fn, path === '' ? k : `${path}.${k}`)
  if (schema.items !== undefined) walkSchema(schema.items, fn, `${path}[]`)
  if (typeof schema.additionalProperties === 'object') walkSchema(schema.additionalProperties, fn, `${path}.*`)
}
