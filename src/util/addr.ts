/** Thrown for a listen address that is not `host:port` or `:port`. */
export class InvalidAddressError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidAddressError'
  }
}

export interface ListenAddress {
  /** Host to bind; '' means every address (IPv4 and IPv6). */
  host: string
  port: number
}

/** Parses Go-style listen addresses: `:5000`, `0.0.0.0:5000`, `[::1]:5000`, `localhost:5000`. */
export function parseListenAddress (addr: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.%\w]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr.trim())
  if (m === null) throw new InvalidAddressError(`invalid address ${JSON.stringify(addr)}: want host:port or :port`)
  const port = Number(m[3])
  if (port > 65535) throw new InvalidAddressError(`invalid address ${JSON.stringify(addr)}: port out of range`)
  return { host: m[1] ?? m[2] ?? '', port }
}

/** Options for net.Server#listen / fastify.listen; '' binds the IPv6 wildcard, which also accepts IPv4. */
export function listenOptions (addr: ListenAddress): { host: string, port: number } {
  return { host: addr.host === '' ? '::' : addr.host, port: addr.port }
}
