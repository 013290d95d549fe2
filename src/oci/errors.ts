// Errors raised while parsing or validating OCI input. They carry no HTTP status: the registry maps them at its edge.

export class InvalidDigestError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidDigestError'
  }
}

export class InvalidNameError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidNameError'
  }
}

export class InvalidReferenceError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidReferenceError'
  }
}

export class InvalidRangeError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidRangeError'
  }
}
