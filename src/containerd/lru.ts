/** A Map bounded to `capacity` entries that evicts the least recently used one. */
export class LruMap<K, V> {
  private readonly map = new Map<K, V>()
  readonly capacity: number

  constructor (capacity: number) {
    if (!(capacity >= 1)) throw new RangeError('capacity must be at least 1')
    this.capacity = capacity
  }

  get size (): number {
    return this.map.size
  }

  get (key: K): V | undefined {
    const value = this.map.get(key)
    if (value !== undefined) {
      // Map iteration order is insertion order: re-inserting makes the entry the most recent.
      this.map.delete(key)
      this.map.set(key, value)
    }
    return value
  }

  has (key: K): boolean {
    return this.map.has(key)
  }

  set (key: K, value: V): void {
    this.map.delete(key)
    this.map.set(key, value)
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next()
      if (oldest.done !== true) this.map.delete(oldest.value)
    }
  }

  delete (key: K): boolean {
    return this.map.delete(key)
  }

  clear (): void {
    this.map.clear()
  }
}
