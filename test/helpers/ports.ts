import { createServer } from 'node:net'

/** A TCP port on `host` that was free a moment ago (the kernel picks it; there is a small race until the caller binds it). */
export async function freePort (host = '127.0.0.1'): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      if (address === null || typeof address === 'string') {
        server.close()
        reject(new Error(`could not read the port of a socket listening on ${host}`))
        return
      }
      const port = address.port
      server.close(() => { resolve(port) })
    })
  })
}
