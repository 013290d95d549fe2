/** A method was called on a router after close(). */
export class RouterClosedError extends Error {
  constructor (message = 'router is closed') {
    super(message)
    this.name = 'RouterClosedError'
  }
}

/** `--router-addr` (or another listen address) is not `host:port`. */
export class InvalidAddressError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidAddressError'
  }
}

/** A bootstrapper could not produce candidate peers (DNS failure, HTTP error, bad JSON, bad multiaddr). */
export class BootstrapError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'BootstrapError'
  }
}

/** The persisted identity file exists but cannot be used. */
export class IdentityError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'IdentityError'
  }
}
