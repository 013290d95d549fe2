export type { ContentStore, Descriptor, Download, ImageRecord, ReadOptions, StoreChange, StoreOptions } from './types.ts'
export { NotFoundError, StoreUnavailableError } from './errors.ts'
export { MemoryStore } from './memory.ts'
export type { MemoryImage } from './memory.ts'
