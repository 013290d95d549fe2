export { ContainerdClient, grpcCode } from './client.ts'
export type {
  CallOptions,
  ContainerdApi,
  ContainerdClientOptions,
  ContainerdEvent,
  ContentInfo,
  EventPayload,
  ImageInfo,
  PluginInfo,
  ReadContentOptions,
} from './client.ts'
export { ContainerdStore } from './store.ts'
export type { ContainerdStoreOptions } from './store.ts'
