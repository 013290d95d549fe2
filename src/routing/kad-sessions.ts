import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import { raceAbort } from '../util/abort.ts'
import { dhtProtocol } from './constants.ts'
import { FrameReader, KadMessageError } from './kad-message.ts'

/**
 * DHT requests that have an answer (GET_PROVIDERS), sent to a peer on one stream kept open while it is in use. A
 * stream per request costs a stream's opening and protocol negotiation (a round trip through both event loops),
 * libp2p's bookkeeping on both sides, and its closing: most of an ask's 10–100 ms on a loaded node, and a herd
 * election asks every peer three times per blob. Kad-dht answers the requests on a stream one after the other, in
 * order (js- and go-libp2p alike), so requests are written as they come and answers are matched to them in order.
 *
 * A stream is closed once nothing was asked on it for `idleMs` (below the 10 s after which js-libp2p's kad-dht drops
 * a silent stream), and dropped when it fails or the peer ends it: the next request opens a new one. A request whose
 * caller gives up is forgotten (its answer is read and dropped); when every request waiting on a stream has been
 * given up, the stream is aborted, since a peer that does not answer would otherwise hold the ones after it.
 */
export interface KadSessionsOptions {
  node: Pick<Libp2p, 'dialProtocol'>
  /** Aborted when the router closes: every stream is aborted. */
  shutdown: AbortSignal
  /** How long an unused stream stays open (default 2 s). */
  idleMs?: number
  /** Bound on opening a stream (default 5 s). */
  openTimeoutMs?: number
  /** The protocol the streams speak (default the DHT's; tests). */
  protocol?: string
}

interface Waiting {
  resolve: (message: Uint8Array) => void
  reject: (err: Error) => void
  abandoned: boolean
}

/** The stream or the peer failed before the answer came. */
export class KadSessionError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'KadSessionError'
  }
}

class Session {
  private readonly waiting: Waiting[] = []
  private readonly frames = new FrameReader()
  private idleTimer: NodeJS.Timeout | undefined
  private ended: Error | undefined
  private readonly stream: Stream
  private readonly idleMs: number
  private readonly onEnd: (session: Session) => void

  constructor (stream: Stream, idleMs: number, onEnd: (session: Session) => void) {
    this.stream = stream
    this.idleMs = idleMs
    this.onEnd = onEnd
    this.readAnswers().catch(() => {})
    this.armIdle()
  }

  get usable (): boolean {
    return this.ended === undefined
  }

  async ask (request: Uint8Array, signal: AbortSignal): Promise<Uint8Array> {
    signal.throwIfAborted()
    if (this.ended !== undefined) throw this.ended
    clearTimeout(this.idleTimer)
    const { promise: answer, resolve, reject } = Promise.withResolvers<Uint8Array>()
    const waiting: Waiting = { resolve, reject, abandoned: false }
    // Settled by whoever comes first (the answer, the session's end, the caller's abort); awaited below unless the
    // request could not even be written: never a rejection nobody handles.
    answer.catch(() => {})
    this.waiting.push(waiting)
    const onAbort = (): void => {
      if (waiting.abandoned) return
      waiting.abandoned = true
      waiting.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
      if (this.waiting.every((w) => w.abandoned)) this.end(new KadSessionError('every request on the stream was given up'), true)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      if (!this.stream.send(request)) await this.stream.onDrain({ signal })
      return await answer
    } catch (err) {
      onAbort()
      throw err
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** Ends the session: every request still waiting fails; the stream is aborted (or closed, when idle). */
  end (reason: Error, abort: boolean): void {
    if (this.ended !== undefined) return
    this.ended = reason
    clearTimeout(this.idleTimer)
    for (const w of this.waiting.splice(0)) if (!w.abandoned) w.reject(reason)
    this.onEnd(this)
    if (abort) this.stream.abort(reason)
    else this.stream.close().catch((err: unknown) => { this.stream.abort(err instanceof Error ? err : reason) })
  }

  private async readAnswers (): Promise<void> {
    try {
      for await (const chunk of this.stream) {
        this.frames.append(chunk.subarray())
        for (let message = this.frames.shift(); message !== undefined; message = this.frames.shift()) {
          const waiting = this.waiting.shift()
          if (waiting === undefined) throw new KadMessageError('the peer answered a request nobody made')
          if (!waiting.abandoned) waiting.resolve(message)
        }
        if (this.waiting.length === 0) this.armIdle()
      }
      this.end(new KadSessionError('the peer ended the stream'), false)
    } catch (err) {
      this.end(err instanceof Error ? err : new KadSessionError(String(err)), true)
    }
  }

  private armIdle (): void {
    clearTimeout(this.idleTimer)
    this.idleTimer = setTimeout(() => {
      if (this.waiting.length === 0) this.end(new KadSessionError('closed after being idle'), false)
    }, this.idleMs)
    this.idleTimer.unref()
  }
}

export class KadSessions {
  private readonly options: KadSessionsOptions
  private readonly sessions = new Map<string, Promise<Session>>()

  constructor (options: KadSessionsOptions) {
    this.options = options
    options.shutdown.addEventListener('abort', () => { this.close() }, { once: true })
  }

  /** Sends `request` (a length-prefixed DHT message) to `peer` and resolves with its answer (without the prefix). */
  async ask (peer: PeerId, request: Uint8Array, signal: AbortSignal): Promise<Uint8Array> {
    const session = await raceAbort(this.session(peer), signal)
    return await session.ask(request, signal)
  }

  /** Streams open now (tests). */
  get size (): number {
    return this.sessions.size
  }

  close (): void {
    for (const pending of this.sessions.values()) pending.then((s) => { s.end(new KadSessionError('the router closed'), true) }, () => {})
    this.sessions.clear()
  }

  private async session (peer: PeerId): Promise<Session> {
    const key = peer.toString()
    const existing = this.sessions.get(key)
    if (existing !== undefined) {
      const session = await existing.catch(() => undefined)
      if (session?.usable === true) return session
      if (this.sessions.get(key) === existing) this.sessions.delete(key)
      // Another caller may have opened a new one meanwhile.
      const again = this.sessions.get(key)
      if (again !== undefined) return await again
    }
    if (this.options.shutdown.aborted) throw new KadSessionError('the router closed')
    const opening = (async () => {
      const signal = AbortSignal.any([this.options.shutdown, AbortSignal.timeout(this.options.openTimeoutMs ?? 5_000)])
      const stream = await this.options.node.dialProtocol(peer, this.options.protocol ?? dhtProtocol, { signal })
      return new Session(stream, this.options.idleMs ?? 2_000, (ended) => {
        // Only this session's entry: a newer one may have replaced it.
        void opening.then((s) => { if (s === ended && this.sessions.get(key) === opening) this.sessions.delete(key) }, () => {})
      })
    })()
    this.sessions.set(key, opening)
    opening.catch(() => { if (this.sessions.get(key) === opening) this.sessions.delete(key) })
    return await opening
  }
}
