import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Metrics } from '../metrics/index.ts'

export interface ConnectionLimitsOptions {
  /** Connections without a request in progress that are kept open; beyond, the one idle longest is closed. */
  maxIdle?: number
  /** Open connections at most; a new one beyond is closed at once. */
  maxConnections?: number
  metrics?: Metrics
}

export interface ConnectionStats {
  active: number
  idle: number
}

/**
 * Bounds what connections cost. A connection holds memory (socket, parser, request objects) whether or not it is used,
 * and clients may open thousands and never send a request, or keep them alive forever. Idle ones (no request in
 * progress, including fresh ones that have not sent a complete request head yet, so slow senders of headers count
 * too) are capped: past the cap, the one idle longest is closed, which a keep-alive client handles by reconnecting.
 * Connections with a request in progress are bounded by the transfer budget and by `maxConnections`.
 */
export class ConnectionLimits {
  private readonly idle = new Map<Socket, true>()
  private readonly active = new Set<Socket>()
  private readonly maxIdle: number
  private readonly metrics: Metrics | undefined

  constructor (server: Server, options: ConnectionLimitsOptions = {}) {
    this.maxIdle = options.maxIdle ?? 256
    this.metrics = options.metrics
    server.maxConnections = options.maxConnections ?? 1024
    server.on('drop', () => { this.metrics?.connectionsClosed.inc({ reason: 'connection_limit' }) })
    server.on('connection', (socket: Socket) => {
      this.setIdle(socket)
      socket.once('close', () => {
        this.idle.delete(socket)
        this.active.delete(socket)
      })
    })
    server.on('request', (req: { socket: Socket }, res: { once: (event: 'close' | 'finish', listener: () => void) => unknown }) => {
      const socket = req.socket
      this.idle.delete(socket)
      this.active.add(socket)
      // 'finish' once the response is written (the connection may carry the next request), 'close' if it broke.
      let done = false
      const end = (): void => {
        if (done) return
        done = true
        this.active.delete(socket)
        if (!socket.destroyed) this.setIdle(socket)
      }
      res.once('finish', end)
      res.once('close', end)
    })
    this.metrics?.registerConnectionGauges(() => this.stats())
  }

  stats (): ConnectionStats {
    return { active: this.active.size, idle: this.idle.size }
  }

  private setIdle (socket: Socket): void {
    this.idle.delete(socket)
    this.idle.set(socket, true)
    while (this.idle.size > this.maxIdle) {
      const oldest = this.idle.keys().next().value as Socket
      this.idle.delete(oldest)
      oldest.destroy()
      this.metrics?.connectionsClosed.inc({ reason: 'idle_limit' })
    }
  }
}
