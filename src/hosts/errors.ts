/** A mirrored registry or mirror target is not an acceptable `http(s)://host[:port]` URL. */
export class InvalidRegistryUrlError extends Error {
  /** The value as the user gave it. */
  readonly value: string

  constructor (value: string, reason: string) {
    super(`invalid registry url ${JSON.stringify(value)}: ${reason}`)
    this.name = 'InvalidRegistryUrlError'
    this.value = value
  }
}

/** No mirror target was given; containerd needs at least one `[host]` table to use a hosts.toml at all. */
export class MirrorTargetsRequiredError extends Error {
  constructor () {
    super('at least one mirror target is required')
    this.name = 'MirrorTargetsRequiredError'
  }
}

/** An existing hosts.toml (to be prepended to) is not valid TOML. */
export class InvalidHostsFileError extends Error {
  readonly path: string

  constructor (path: string, options?: { cause?: unknown }) {
    const detail = options?.cause instanceof Error ? `: ${options.cause.message.split('\n')[0] ?? ''}` : ''
    super(`cannot parse existing containerd host configuration ${path}${detail}`, options)
    this.name = 'InvalidHostsFileError'
    this.path = path
  }
}

/**
 * The configuration directory is in a state we cannot resolve without risking the user's files, e.g. an entry exists
 * both in the backup and outside it. Nothing is deleted; a human has to look.
 */
export class BackupConflictError extends Error {
  readonly path: string

  constructor (path: string, reason: string) {
    super(`cannot safely back up or restore containerd host configuration at ${path}: ${reason}`)
    this.name = 'BackupConflictError'
    this.path = path
  }
}
