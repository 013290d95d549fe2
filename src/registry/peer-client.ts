import net from 'node:net'
import tls, { type ConnectionOptions } from 'node:tls'
import { giveBufferFor, takeBuffer, takeLargeFor, type ChunkAllowance } from './buffers.ts'
import { Header } from '../util/http.ts'

/**
 * A minimal HTTP/1.1 client for fetching a blob from a peer's registry (always our own registry, which answers GETs
 * with Content-Length and never with chunked encoding). It reads the socket straight into a few reused buffers
 * (net's `onread` option) and hands out full buffers, so a transfer costs one hash update and one socket write per
 * 64 KiB chunk instead of node:http's parser, a fresh buffer and a stream push per read.
 */

/** Chunks one connection may hold (being filled, waiting to be read, being written to the client). */
export const maxBuffersPerConnection = 3
/** A response head larger than this is not from our registry. */
const maxHeadSize = 16 * 1024
const headEnd = Buffer.from('\r\n\r\n', 'latin1')

/** A peer's response was not what a registry must answer. */
export class PeerResponseError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'PeerResponseError'
  }
}

/** The peer answered that it is too busy to serve now (429 or 503): another holder is asked at once. */
export class PeerBusyError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'PeerBusyError'
  }
}

/** The peer did not accept the TCP connection in time. */
export class ConnectTimeoutError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConnectTimeoutError'
  }
}

/** The peer sent nothing (head or body) for too long. */
export class StallError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'StallError'
  }
}

/** The connection to the peer ended or failed before the body was complete. */
export class PeerConnectionError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'PeerConnectionError'
  }
}

/** Bytes of a response body. `data` stays valid until `release()`, which lends the buffer to the next read. */
export interface BodyChunk {
  data: Buffer
  release: () => void
}

export interface PeerGetOptions {
  host: string
  port: number
  /** Request target: path and query. */
  target: string
  /** Extra request headers (names as sent). */
  headers: Record<string, string>
  connectTimeoutMs: number
  stallTimeoutMs: number
  signal: AbortSignal
  /** Grants large buffers (512 KiB, a tenth of the per-chunk work) while the transfer budget has room. */
  allowance?: ChunkAllowance
  /** Connect with TLS (`--registry-cert-dir`). */
  tls?: ConnectionOptions
}

/**
 * One GET to a peer. `open()` resolves once the response head is parsed; the body (exactly Content-Length bytes, only
 * for 200 and 206) is then pulled with `read()`. Reading from the socket pauses while all of this connection's buffers
 * are waiting to be read or released, which carries the client's back-pressure to the peer. Stall detection only runs
 * while we wait for the peer, not while the client is slow.
 */
export class PeerConnection {
  status = 0
  private readonly headerMap = new Map<string, string>()
  private readonly socket: net.Socket
  private readonly init: PeerGetOptions
  private current: Buffer
  /** In `current`: where unread body bytes start, and how far the socket has filled it. */
  private begin = 0
  private filled = 0
  private headDone = false
  private remaining = 0
  private complete = false
  private error: Error | undefined
  private owned = 1
  /** Filled buffers not yet released, oldest first; `ready` holds those not yet read. */
  private readonly outstanding: Buffer[] = []
  private readonly ready: BodyChunk[] = []
  /** Reading is paused until this buffer is released; it is already the next buffer to fill. */
  private waitingFor: Buffer | undefined
  private reader: { resolve: (c: BodyChunk | null) => void, reject: (e: Error) => void } | undefined
  private head: { resolve: () => void, reject: (e: Error) => void } | undefined
  private stallTimer: NodeJS.Timeout | undefined
  private readonly connectTimer: NodeJS.Timeout
  private readonly onAbort: () => void

  private constructor (init: PeerGetOptions, head: { resolve: () => void, reject: (e: Error) => void }) {
    this.init = init
    this.head = head
    this.current = this.take()
    const connect = {
      host: init.host,
      port: init.port,
      noDelay: true,
      onread: {
        // Called after every read for where the next one goes; views keep filling one buffer up to its end.
        buffer: () => this.current.subarray(this.filled),
        callback: (n: number) => this.onRead(n),
      },
    }
    this.socket = init.tls !== undefined ? tls.connect({ ...init.tls, ...connect }) : net.connect(connect)
    this.connectTimer = setTimeout(() => {
      if (this.socket.connecting) this.fail(new ConnectTimeoutError(`connect to ${init.host} timed out after ${init.connectTimeoutMs}ms`))
    }, init.connectTimeoutMs)
    this.socket.once('connect', () => {
      clearTimeout(this.connectTimer)
      this.armStall()
    })
    this.socket.on('error', (err) => { this.fail(new PeerConnectionError(`connection to ${init.host} failed: ${err.message}`, { cause: err })) })
    this.socket.once('end', () => { this.fail(new PeerConnectionError(`peer ${init.host} closed the connection`)) })
    this.socket.once('close', () => { this.fail(new PeerConnectionError(`connection to ${init.host} closed`)) })
    this.onAbort = () => { this.fail(toError(init.signal.reason)) }
    init.signal.addEventListener('abort', this.onAbort, { once: true })
    const host = init.host.includes(':') ? `[${init.host}]` : init.host
    let request = `GET ${init.target} HTTP/1.1\r\nHost: ${host}:${init.port}\r\nConnection: close\r\n`
    for (const [name, value] of Object.entries(init.headers)) request += `${name}: ${value}\r\n`
    this.socket.write(request + '\r\n', 'latin1')
    // Flowing mode, so EOF is reported as 'end' (no data events come: reads go to our buffers).
    this.socket.resume()
  }

  /** Connects, sends the request and resolves once the response head has arrived. */
  static async open (init: PeerGetOptions): Promise<PeerConnection> {
    init.signal.throwIfAborted()
    let conn: PeerConnection | undefined
    await new Promise<void>((resolve, reject) => { conn = new PeerConnection(init, { resolve, reject }) })
    return conn as unknown as PeerConnection
  }

  /** The first value of a response header (name in lower case). */
  header (name: string): string | undefined {
    return this.headerMap.get(name)
  }

  /** The next part of the body, or null after its last byte. After an error, bytes received before it come first. */
  async read (): Promise<BodyChunk | null> {
    const chunk = this.ready.shift()
    if (chunk !== undefined) return chunk
    if (this.error !== undefined) throw this.error
    if (this.complete) return null
    return await new Promise<BodyChunk | null>((resolve, reject) => { this.reader = { resolve, reject } })
  }

  /** Closes the connection; chunks already handed out stay valid until released. */
  destroy (): void {
    this.fail(new PeerConnectionError('request cancelled'))
    for (const c of this.ready.splice(0)) c.release()
  }

  private onRead (n: number): boolean {
    if (this.error !== undefined || this.complete) return false
    this.stallTimer?.refresh()
    if (!this.headDone) {
      this.filled += n
      if (!this.parseHead()) return true
    } else {
      this.filled += Math.min(n, this.remaining)
      this.remaining -= Math.min(n, this.remaining)
    }
    if (this.remaining === 0) {
      this.finish()
      return false
    }
    if (this.filled === this.current.length) return this.nextBuffer()
    return true
  }

  /** Parses the response head once it is complete; false while more is needed. */
  private parseHead (): boolean {
    const end = this.current.subarray(0, this.filled).indexOf(headEnd)
    if (end === -1) {
      if (this.filled >= maxHeadSize) this.fail(new PeerResponseError(`peer ${this.init.host} sent an oversized response head`))
      return false
    }
    const lines = this.current.toString('latin1', 0, end).split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '')
    if (m === null) {
      this.fail(new PeerResponseError(`peer ${this.init.host} sent an invalid status line`))
      return false
    }
    this.status = Number(m[1])
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] as string
      const colon = line.indexOf(':')
      if (colon <= 0 || line.startsWith(' ') || line.startsWith('\t')) {
        this.fail(new PeerResponseError(`peer ${this.init.host} sent an invalid header line`))
        return false
      }
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line.slice(colon + 1).trim()
      const seen = this.headerMap.get(name)
      if (seen === undefined) this.headerMap.set(name, value)
      else if (name === Header.contentLength && seen !== value) {
        this.fail(new PeerResponseError(`peer ${this.init.host} sent conflicting Content-Length headers`))
        return false
      }
    }
    this.headDone = true
    this.begin = end + headEnd.length
    if (this.status === 200 || this.status === 206) {
      if (this.headerMap.has(Header.transferEncoding)) {
        this.fail(new PeerResponseError(`peer ${this.init.host} sent a Transfer-Encoding body; only Content-Length is supported`))
        return false
      }
      const length = this.headerMap.get(Header.contentLength) ?? ''
      if (!/^\d{1,15}$/.test(length)) {
        this.fail(new PeerResponseError(`peer ${this.init.host} sent no valid Content-Length`))
        return false
      }
      this.remaining = Number(length)
    }
    // Body bytes that came with the head; anything beyond Content-Length is ignored.
    const extra = Math.min(this.filled - this.begin, this.remaining)
    this.filled = this.begin + extra
    this.remaining -= extra
    const head = this.head
    this.head = undefined
    head?.resolve()
    return true
  }

  /** The current buffer is full: hands it out and moves on to a free one, or pauses until one comes back. */
  private nextBuffer (): boolean {
    this.flush()
    if (this.owned < maxBuffersPerConnection) {
      this.owned++
      this.current = this.take()
      return true
    }
    // The oldest buffer in use is the next to be released (chunks are written in order); read into it once it is.
    this.waitingFor = this.outstanding[0]
    this.current = this.waitingFor as Buffer
    this.filled = 0
    this.begin = 0
    this.disarmStall()
    return false
  }

  private flush (): void {
    if (this.filled > this.begin) {
      const buffer = this.current
      const chunk: BodyChunk = { data: buffer.subarray(this.begin, this.filled), release: () => { this.release(buffer) } }
      this.outstanding.push(buffer)
      const reader = this.reader
      this.reader = undefined
      if (reader !== undefined) reader.resolve(chunk)
      else this.ready.push(chunk)
    } else if (this.current !== this.waitingFor) {
      // Nothing in it (the connection ended or failed): back to the pool. Callers destroy the socket in the same
      // turn, so no read can land in it any more.
      this.owned--
      this.give(this.current)
    } else {
      // Paused: this buffer is still out with the reader and comes back through release().
      this.owned--
    }
    this.filled = 0
    this.begin = 0
  }

  private release (buffer: Buffer): void {
    const i = this.outstanding.indexOf(buffer)
    if (i === -1) return
    this.outstanding.splice(i, 1)
    if (buffer === this.waitingFor) {
      this.waitingFor = undefined
      if (this.error === undefined && !this.complete) {
        this.armStall()
        this.socket.resume()
      } else {
        this.give(buffer)
      }
      return
    }
    this.owned--
    this.give(buffer)
  }

  /** The whole body has arrived. */
  private finish (): void {
    this.complete = true
    this.flush()
    this.cleanup()
    const reader = this.reader
    this.reader = undefined
    reader?.resolve(null)
    const head = this.head
    this.head = undefined
    head?.resolve()
  }

  private fail (err: Error): void {
    if (this.error !== undefined || this.complete) return
    this.error = err
    // Bytes received before the failure are still handed out, so a resume starts after them.
    if (this.headDone) this.flush()
    else this.filled = this.begin = 0
    this.cleanup()
    if (!this.headDone) {
      // The socket is destroyed: nothing can read into the buffer any more.
      this.owned--
      this.give(this.current)
    }
    const head = this.head
    this.head = undefined
    head?.reject(err)
    const reader = this.reader
    this.reader = undefined
    if (reader !== undefined) {
      const chunk = this.ready.shift()
      if (chunk !== undefined) reader.resolve(chunk)
      else reader.reject(err)
    }
  }

  private cleanup (): void {
    clearTimeout(this.connectTimer)
    this.disarmStall()
    this.init.signal.removeEventListener('abort', this.onAbort)
    this.socket.destroy()
  }

  private take (): Buffer {
    return takeLargeFor(this.init.allowance) ?? takeBuffer()
  }

  private give (buffer: Buffer): void {
    giveBufferFor(buffer, this.init.allowance)
  }

  private armStall (): void {
    if (this.stallTimer !== undefined) {
      this.stallTimer.refresh()
      return
    }
    this.stallTimer = setTimeout(() => {
      this.fail(new StallError(`peer ${this.init.host} stalled for ${this.init.stallTimeoutMs}ms`))
    }, this.init.stallTimeoutMs)
  }

  private disarmStall (): void {
    clearTimeout(this.stallTimer)
    this.stallTimer = undefined
  }
}

function toError (reason: unknown): Error {
  return reason instanceof Error ? reason : new PeerConnectionError(String(reason))
}
