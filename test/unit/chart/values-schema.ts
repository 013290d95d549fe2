import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Ajv } from 'ajv'
import type { ErrorObject, SchemaObject } from 'ajv'
import { chartDir } from './chart.ts'

// chart/values.schema.json checked with Ajv (draft-07, the draft the schema declares). Helm validates values with
// its own implementation when rendering; the tests use both.

export type Schema = SchemaObject

export const valuesSchema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8')) as Schema

export interface SchemaError {
  /** Dotted path of the offending value, as a values file names it: `spegel.mirroredRegistries[0]`; '' for the root. */
  path: string
  /** The schema keyword that failed: type, enum, pattern, minimum, maximum, maxItems, ... */
  keyword: string
  message: string
}

function dotted (instancePath: string): string {
  return instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, p) => /^\d+$/.test(p) ? `${acc}[${p}]` : acc === '' ? p : `${acc}.${p}`, '')
}

// strict: unknown keywords or formats in the schema are errors, so the schema cannot use what is not checked. Union
// types (`"type": ["string", "integer"]`, as image.tag has) are allowed: helm accepts them too.
const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true })
const compiled = new Map<Schema, ReturnType<typeof ajv.compile>>()

/** Every violation of `schema` by `data`, one entry per failing keyword. Empty when `data` is valid. */
export function schemaErrors (schema: Schema, data: unknown): SchemaError[] {
  let validate = compiled.get(schema)
  if (validate === undefined) {
    validate = ajv.compile(schema)
    compiled.set(schema, validate)
  }
  if (validate(data)) return []
  return (validate.errors ?? []).map((e: ErrorObject) => ({ path: dotted(e.instancePath), keyword: e.keyword, message: e.message ?? '' }))
}

/** The violations as `path: message` lines (empty when valid). */
export function validate (schema: Schema, data: unknown): string[] {
  return schemaErrors(schema, data).map((e) => `${e.path || '(root)'}: ${e.message}`)
}
