import { createServer, type Server } from 'node:net'

/** A TCP port on `host` that was free a moment ago (the kernel picks it; there is a small race until the caller binds it). */
export async function freePort (host = '127.0.0.1'): Promise<number> {
  return (await freePorts(1, host))[0]!
}

/**
 * `count` distinct TCP ports on `host` that were free a moment ago. All are held until the last is picked: one port
 * freed and asked for again at once may come back (two freePort() calls once gave etcd the same client and peer port).
 */
export async function freePorts (count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: Server[] = []
  try {
    const ports: number[] = []
    for (let i = 0; i < count; i++) {
      const server = createServer()
      server.unref()
      servers.push(server)
      ports.push(await new Promise<number>((resolve, reject) => {
        server.once('error', reject)
        server.listen(0, host, () => {
          const address = server.address()
          if (address === null || typeof address === 'string') reject(new Error(`could not read the port of a socket listening on ${host}`))
          else resolve(address.port)
        })
      }))
    }
    return ports
  } finally {
    await Promise.all(servers.map(async (s) => await new Promise<void>((resolve) => { if (s.listening) s.close(() => { resolve() }); else resolve() })))
  }
}
