// The error JSON the OCI distribution spec defines: {"errors":[{"code","message","detail"}]}. Errors from the rest of
// the program are mapped to it only here, at the HTTP edge.

/** The spec's codes for 4xx answers (a 4xx JSON body must use one of these), and UNAVAILABLE for 5xx only. */
export type OciErrorCode =
  | 'BLOB_UNKNOWN' | 'DIGEST_INVALID' | 'MANIFEST_UNKNOWN' | 'MANIFEST_INVALID' | 'NAME_INVALID' | 'NAME_UNKNOWN'
  | 'SIZE_INVALID' | 'UNAUTHORIZED' | 'DENIED' | 'UNSUPPORTED' | 'TOOMANYREQUESTS' | 'UNAVAILABLE'

/** An error answered to the HTTP client with an OCI error body. */
export class RegistryError extends Error {
  readonly status: number
  readonly code: OciErrorCode
  readonly detail: unknown
  readonly headers: Readonly<Record<string, string>>

  constructor (status: number, code: OciErrorCode, message: string, options: { detail?: unknown, headers?: Record<string, string>, cause?: unknown } = {}) {
    super(message, { cause: options.cause })
    this.name = 'RegistryError'
    this.status = status
    this.code = code
    this.detail = options.detail
    this.headers = options.headers ?? {}
  }

  body (): string {
    const entry: { code: string, message: string, detail?: unknown } = { code: this.code, message: this.message }
    if (this.detail !== undefined) entry.detail = this.detail
    return JSON.stringify({ errors: [entry] })
  }
}
