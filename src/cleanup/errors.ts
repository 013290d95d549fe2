/** A cleanup probe did not answer 200. */
export class ProbeFailedError extends Error {
  readonly url: string

  constructor (url: string, reason: string, options?: { cause?: unknown }) {
    super(`cleanup probe ${url} failed: ${reason}`, options)
    this.name = 'ProbeFailedError'
    this.url = url
  }
}
