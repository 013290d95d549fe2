// Query-string validation for the debug routes without Ajv. Fastify builds its Ajv instance for the first route that
// declares a schema, and that instance (about 2 MiB of JavaScript heap, compiled once at startup) was the whole memory
// cost of the debug page (docs/benchmarks.md, issue 2). The debug routes need one check: "an optional, short string".
import type { FastifySchemaCompiler } from 'fastify'

/** The schema subset this compiler understands: an object of optional string properties, each with a length limit. */
export interface StringQuerySchema {
  type: 'object'
  properties: Record<string, { type: 'string', maxLength?: number }>
}

/** A query string that does not match its route's schema; fastify answers it with status 400. */
export class QueryValidationError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'QueryValidationError'
  }
}

/**
 * A fastify validator compiler for StringQuerySchema query strings. Any other schema, or a schema on another part of
 * the request, throws when the route is registered, so a richer schema added later fails at startup instead of being
 * accepted unchecked.
 */
export const compileStringQuery: FastifySchemaCompiler<unknown> = ({ schema, httpPart, url }) => {
  if (httpPart !== 'querystring' || !isStringQuerySchema(schema)) {
    throw new Error(`${url}: only querystring schemas of optional string properties are supported (${httpPart ?? 'unknown part'})`)
  }
  const properties = Object.entries(schema.properties)
  return (data: unknown) => {
    const query = (data ?? {}) as Record<string, unknown>
    for (const [name, rule] of properties) {
      const value = query[name]
      if (value === undefined) continue
      // A repeated key arrives as an array.
      if (typeof value !== 'string') return { error: new QueryValidationError(`querystring/${name} must be one string`) }
      if (rule.maxLength !== undefined && value.length > rule.maxLength) {
        return { error: new QueryValidationError(`querystring/${name} must NOT have more than ${rule.maxLength} characters`) }
      }
    }
    return { value: query }
  }
}

function isStringQuerySchema (schema: unknown): schema is StringQuerySchema {
  const s = schema as Partial<StringQuerySchema> | null
  if (s === null || typeof s !== 'object' || s.type !== 'object' || typeof s.properties !== 'object' || s.properties === null) return false
  const allowed = new Set(['type', 'properties'])
  if (!Object.keys(s).every((k) => allowed.has(k))) return false
  return Object.values(s.properties).every((p) => p !== null && typeof p === 'object' && p.type === 'string' &&
    Object.keys(p).every((k) => k === 'type' || k === 'maxLength') && (p.maxLength === undefined || Number.isInteger(p.maxLength)))
}
