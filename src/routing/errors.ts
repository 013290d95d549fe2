/** A method was called on a router after close(). */
export class RouterClosedError extends Error {
  constructor (message = 'router is closed') {
    super(message)
    this.name = 'RouterClosedError'
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
