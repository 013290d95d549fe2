import type { RequestRecord } from '../registry/types.ts'

/** One answered registry request, as the debug page lists it. */
export interface RecentRequest {
  /** Unix milliseconds when the response finished. */
  at: number
  method: string
  kind: 'manifests' | 'blobs'
  registry: string
  repository: string
  /** Digest or tag requested. */
  reference: string
  status: number
  source: RequestRecord['source']
  bytes: number
  durationMs: number
}

/** The last `capacity` registry requests, newest first; fed by the registry's onRequest callback. */
export class RecentRequests {
  private readonly capacity: number
  private readonly items: RecentRequest[] = []
  private next = 0

  constructor (capacity = 100) {
    this.capacity = Math.max(1, capacity)
  }

  record (record: RequestRecord, now = Date.now()): void {
    const item: RecentRequest = {
      at: now,
      method: record.method,
      kind: record.path.kind,
      registry: record.path.registry,
      repository: record.path.repository,
      reference: record.path.digest ?? record.path.tag ?? '',
      status: record.status,
      source: record.source,
      bytes: record.bytes,
      durationMs: record.durationMs,
    }
    if (this.items.length < this.capacity) this.items.push(item)
    else this.items[this.next] = item
    this.next = (this.next + 1) % this.capacity
  }

  /** Newest first. */
  list (): RecentRequest[] {
    const ordered = this.items.length < this.capacity
      ? [...this.items]
      : [...this.items.slice(this.next), ...this.items.slice(0, this.next)]
    return ordered.reverse()
  }
}
