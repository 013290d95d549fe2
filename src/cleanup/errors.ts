/** An address or endpoint is not `host:port` (host may be empty only where noted, IPv6 in brackets). */
export class InvalidAddressError extends Error {
  readonly value: string

  constructor (value: string, reason: string) {
    super(`invalid address ${JSON.stringify(value)}: ${reason}`)
    this.name = 'InvalidAddressError'
    this.value = value
  }
}

/** A cleanup probe did not answer 200. */
export class ProbeFailedError extends Error {
  readonly url: string

  constructor (url: string, reason: string, options?: { cause?: unknown }) {
    super(`cleanup probe ${url} failed: ${reason}`, options)
    this.name = 'ProbeFailedError'
    this.url = url
  }
}
