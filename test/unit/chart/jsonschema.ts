// Kept only for test/unit/talos/patches.test.ts, which imports `validate` and `Schema` from here; the chart tests use
// values-schema.ts (Ajv). Delete this file once that import points at values-schema.ts.
export { validate } from './values-schema.ts'
export type { Schema } from './values-schema.ts'
