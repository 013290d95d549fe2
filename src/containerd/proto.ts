// Loads the containerd API definitions in ./proto once and exposes their methods and event decoders, typed as this
// package uses them. Field names keep their proto spelling (keepCase); 64-bit integers become numbers, which is exact
// for any blob size or offset below 8 PiB.
import { fileURLToPath } from 'node:url'
import { loadSync } from '@grpc/proto-loader'
import type { MessageTypeDefinition, MethodDefinition, PackageDefinition } from '@grpc/proto-loader'

export interface WireTimestamp {
  seconds: number
  nanos: number
}

export interface WireAny {
  type_url: string
  value: Buffer
}

export interface WireDescriptor {
  media_type: string
  digest: string
  size: number
  annotations: Record<string, string>
}

export interface WireImage {
  name: string
  labels: Record<string, string>
  target: WireDescriptor | null
  created_at: WireTimestamp | null
  updated_at: WireTimestamp | null
}

export interface WireContentInfo {
  digest: string
  size: number
  created_at: WireTimestamp | null
  updated_at: WireTimestamp | null
  labels: Record<string, string>
}

export interface WireEnvelope {
  timestamp: WireTimestamp | null
  namespace: string
  topic: string
  event: WireAny | null
}

export interface WirePlugin {
  type: string
  id: string
  requires: string[]
  platforms: Array<{ os: string, architecture: string, variant: string, os_version: string }>
  exports: Record<string, string>
  capabilities: string[]
  init_err: { code: number, message: string } | null
}

/** The methods ContainerdClient calls, with their request and response shapes. */
export interface ContainerdMethods {
  imagesGet: MethodDefinition<{ name: string }, { image: WireImage | null }>
  imagesList: MethodDefinition<{ filters: string[] }, { images: WireImage[] }>
  contentInfo: MethodDefinition<{ digest: string }, { info: WireContentInfo | null }>
  contentList: MethodDefinition<{ filters: string[] }, { info: WireContentInfo[] }>
  contentRead: MethodDefinition<{ digest: string, offset: number, size: number }, { offset: number, data: Buffer }>
  eventsSubscribe: MethodDefinition<{ filters: string[] }, WireEnvelope>
  introspectionPlugins: MethodDefinition<{ filters: string[] }, { plugins: WirePlugin[] }>
  introspectionPluginInfo: MethodDefinition<{ type: string, id: string }, { plugin: WirePlugin | null }>
}

/** Event payload decoders, keyed by the fully qualified message name that ends an Any's type URL. */
export type PayloadDecoders = ReadonlyMap<string, (bytes: Buffer) => Record<string, unknown>>

interface Loaded {
  methods: ContainerdMethods
  payloads: PayloadDecoders
  /** Everything loaded, e.g. for test servers and encoders. */
  definitions: PackageDefinition
}

const protoFiles = [
  'services/images/v1/images.proto',
  'services/content/v1/content.proto',
  'services/events/v1/events.proto',
  'services/introspection/v1/introspection.proto',
  'events/image.proto',
  'events/content.proto',
]

/** Message names of the event payloads we decode. */
export const payloadTypes = [
  'containerd.services.images.v1.ImageCreate',
  'containerd.services.images.v1.ImageUpdate',
  'containerd.services.images.v1.ImageDelete',
  'containerd.events.ContentCreate',
  'containerd.events.ContentDelete',
] as const

let loaded: Loaded | undefined

/** Parses the .proto files on first use; later calls return the same definitions. */
export function containerdProto (): Loaded {
  if (loaded !== undefined) return loaded
  const protoDir = fileURLToPath(new URL('./proto/', import.meta.url))
  const pkg = loadSync(protoFiles, {
    includeDirs: [protoDir],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  })
  const methods: ContainerdMethods = {
    imagesGet: method(pkg, 'containerd.services.images.v1.Images', 'Get'),
    imagesList: method(pkg, 'containerd.services.images.v1.Images', 'List'),
    contentInfo: method(pkg, 'containerd.services.content.v1.Content', 'Info'),
    contentList: method(pkg, 'containerd.services.content.v1.Content', 'List'),
    contentRead: method(pkg, 'containerd.services.content.v1.Content', 'Read'),
    eventsSubscribe: method(pkg, 'containerd.services.events.v1.Events', 'Subscribe'),
    introspectionPlugins: method(pkg, 'containerd.services.introspection.v1.Introspection', 'Plugins'),
    introspectionPluginInfo: method(pkg, 'containerd.services.introspection.v1.Introspection', 'PluginInfo'),
  }
  const payloads = new Map<string, (bytes: Buffer) => Record<string, unknown>>()
  for (const name of payloadTypes) {
    const def = pkg[name] as MessageTypeDefinition<object, Record<string, unknown>> | undefined
    if (def?.format !== 'Protocol Buffer 3 DescriptorProto') throw new Error(`proto message ${name} is not defined`)
    payloads.set(name, def.deserialize)
  }
  loaded = { methods, payloads, definitions: pkg }
  return loaded
}

function method<Req, Res> (pkg: PackageDefinition, service: string, name: string): MethodDefinition<Req, Res> {
  const def = pkg[service] as Record<string, unknown> | undefined
  const m = def?.[name] as MethodDefinition<Req, Res> | undefined
  if (m === undefined || typeof m.path !== 'string') throw new Error(`proto method ${service}.${name} is not defined`)
  return m
}
