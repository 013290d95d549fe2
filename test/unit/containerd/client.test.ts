// ContainerdClient against an in-process gRPC server speaking the same protos: metadata, error mapping, streaming,
// event decoding and reconnection, without a real containerd (the integration tests cover that).
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { Server, ServerCredentials, status } from '@grpc/grpc-js'
import type { Metadata, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js'
import type { MessageTypeDefinition } from '@grpc/proto-loader'
import { ContainerdClient, grpcCode } from '../../../src/containerd/client.ts'
import type { ContainerdEvent } from '../../../src/containerd/client.ts'
import { containerdProto } from '../../../src/containerd/proto.ts'
import { NotFoundError, StoreUnavailableError } from '../../../src/store/errors.ts'
import { waitFor } from '../../helpers/wait.ts'

const defs = containerdProto().definitions
const digest = 'sha256:' + 'ab'.repeat(32)
const blob = Buffer.from('0123456789'.repeat(1000))

interface Fake {
  namespaces: string[]
  /** Envelopes the Subscribe handler sends, then it keeps the stream open. */
  events: Array<{ topic: string, type: string, payload: Record<string, unknown> }>
  pluginInfoImplemented: boolean
}

function encode (type: string, payload: Record<string, unknown>): Buffer {
  return (defs[type] as MessageTypeDefinition<object, object>).serialize(payload)
}

function ns (md: Metadata): string {
  return String(md.get('containerd-namespace')[0] ?? '')
}

function services (fake: Fake): Array<[ServiceDefinition, UntypedServiceImplementation]> {
  const image = { name: 'example.com/app:v1', labels: {}, target: { media_type: 'application/vnd.oci.image.index.v1+json', digest, size: 123, annotations: {} }, created_at: { seconds: 1_700_000_000, nanos: 5_000_000 } }
  return [
    [defs['containerd.services.images.v1.Images'] as ServiceDefinition, {
      Get: (call: ServerUnaryCall<{ name: string }, unknown>, cb: sendUnaryData<unknown>) => {
        fake.namespaces.push(ns(call.metadata))
        if (call.request.name === image.name) cb(null, { image })
        else if (call.request.name === '') cb({ code: status.INVALID_ARGUMENT, details: 'name required' })
        else cb({ code: status.NOT_FOUND, details: 'image not found' })
      },
      List: (call: ServerUnaryCall<{ filters: string[] }, unknown>, cb: sendUnaryData<unknown>) => {
        fake.namespaces.push(ns(call.metadata))
        cb(null, { images: call.request.filters.length === 0 ? [image, { ...image, name: 'sha256:' + 'cd'.repeat(32) }] : [image] })
      },
    }],
    [defs['containerd.services.content.v1.Content'] as ServiceDefinition, {
      Info: (call: ServerUnaryCall<{ digest: string }, unknown>, cb: sendUnaryData<unknown>) => {
        fake.namespaces.push(ns(call.metadata))
        if (call.request.digest === digest) cb(null, { info: { digest, size: blob.byteLength, labels: { a: 'b' } } })
        else cb({ code: status.NOT_FOUND, details: 'content digest not found' })
      },
      List: (call: ServerWritableStream<unknown, unknown>) => {
        call.write({ info: [{ digest, size: blob.byteLength }] })
        call.end()
      },
      Read: (call: ServerWritableStream<{ digest: string, offset: number, size: number }, unknown>) => {
        fake.namespaces.push(ns(call.metadata))
        if (call.request.digest !== digest) {
          call.emit('error', { code: status.NOT_FOUND, details: 'content digest not found' })
          return
        }
        const end = call.request.size > 0 ? call.request.offset + call.request.size : blob.byteLength
        for (let off = call.request.offset; off < end; off += 1000) {
          call.write({ offset: off, data: blob.subarray(off, Math.min(end, off + 1000)) })
        }
        call.end()
      },
    }],
    [defs['containerd.services.events.v1.Events'] as ServiceDefinition, {
      Subscribe: (call: ServerWritableStream<{ filters: string[] }, unknown>) => {
        fake.namespaces.push(ns(call.metadata))
        for (const e of fake.events) {
          call.write({ timestamp: { seconds: 1_700_000_000, nanos: 0 }, namespace: 'k8s.io', topic: e.topic, event: { type_url: e.type, value: encode(e.type, e.payload) } })
        }
        call.write({ namespace: 'k8s.io', topic: '/tasks/start', event: { type_url: 'containerd.events.TaskStart', value: Buffer.from([8, 1]) } })
      },
    }],
    [defs['containerd.services.introspection.v1.Introspection'] as ServiceDefinition, {
      Plugins: (call: ServerUnaryCall<{ filters: string[] }, unknown>, cb: sendUnaryData<unknown>) => {
        const all = [
          { type: 'io.containerd.content.v1', id: 'content', exports: { root: '/var/lib/x/content' } },
          { type: 'io.containerd.snapshotter.v1', id: 'zfs', init_err: { code: 9, message: 'skip' } },
        ]
        cb(null, { plugins: call.request.filters.length === 0 ? all : all.slice(0, 1) })
      },
      PluginInfo: (call: ServerUnaryCall<{ type: string, id: string }, unknown>, cb: sendUnaryData<unknown>) => {
        if (!fake.pluginInfoImplemented) {
          cb({ code: status.UNIMPLEMENTED, details: 'unknown method PluginInfo' })
          return
        }
        cb(null, { plugin: { type: call.request.type, id: call.request.id, exports: { root: '/from/plugininfo' } } })
      },
    }],
  ]
}

async function startServer (socket: string, fake: Fake): Promise<Server> {
  const server = new Server()
  for (const [def, impl] of services(fake)) server.addService(def, impl)
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${socket}`, ServerCredentials.createInsecure(), (err) => { if (err !== null) reject(err); else resolve() })
  })
  return server
}

async function setup (t: TestContext, fake: Partial<Fake> = {}): Promise<{ client: ContainerdClient, fake: Fake, socket: string, server: () => Server, restart: () => Promise<void>, stop: () => void }> {
  const dir = await mkdtemp(join(tmpdir(), 'spegel-grpc-'))
  const socket = join(dir, 'c.sock')
  const state: Fake = { namespaces: [], events: [], pluginInfoImplemented: false, ...fake }
  let server: Server | undefined = await startServer(socket, state)
  const client = new ContainerdClient({ socket, namespace: 'k8s.io', maxReconnectBackoffMs: 200 })
  t.after(async () => {
    client.close()
    server?.forceShutdown()
    await rm(dir, { recursive: true, force: true })
  })
  return {
    client,
    fake: state,
    socket,
    server: () => server!,
    stop: () => { server?.forceShutdown(); server = undefined },
    restart: async () => { server = await startServer(socket, state) },
  }
}

test('unary calls carry the namespace and decode responses', async (t) => {
  const { client, fake } = await setup(t)
  const image = await client.getImage('example.com/app:v1')
  assert.deepEqual(image.target, { mediaType: 'application/vnd.oci.image.index.v1+json', digest, size: 123 })
  assert.deepEqual(image.createdAt, new Date(1_700_000_000_005))
  assert.equal(image.updatedAt, undefined)
  assert.deepEqual((await client.listImages()).map((i) => i.name), ['example.com/app:v1', 'sha256:' + 'cd'.repeat(32)])
  assert.deepEqual((await client.listImages(['name~="^.+/"'])).map((i) => i.name), ['example.com/app:v1'])
  assert.deepEqual(await client.contentInfo(digest), { digest, size: blob.byteLength, labels: { a: 'b' } })
  const listed = []
  for await (const info of client.listContent()) listed.push(info.digest)
  assert.deepEqual(listed, [digest])
  assert.deepEqual(fake.namespaces, ['k8s.io', 'k8s.io', 'k8s.io', 'k8s.io'])
})

test('NOT_FOUND becomes NotFoundError, other codes StoreUnavailableError with the code kept', async (t) => {
  const { client } = await setup(t)
  await assert.rejects(client.getImage('example.com/app:nope'), NotFoundError)
  await assert.rejects(client.contentInfo('sha256:' + '00'.repeat(32)), NotFoundError)
  const err = await client.getImage('').catch((e: unknown) => e)
  assert.ok(err instanceof StoreUnavailableError)
  assert.equal(grpcCode(err), status.INVALID_ARGUMENT)
})

test('readContent streams the requested range and reports absent content on the stream', async (t) => {
  const { client } = await setup(t)
  const read = async (offset: number, size: number, d = digest): Promise<Buffer> => {
    const chunks: Buffer[] = []
    for await (const c of client.readContent(d, { offset, size })) chunks.push(c as Buffer)
    return Buffer.concat(chunks)
  }
  assert.ok((await read(0, 0)).equals(blob))
  assert.ok((await read(2500, 3001)).equals(blob.subarray(2500, 5501)))
  assert.ok((await read(9990, 0)).equals(blob.subarray(9990)))
  await assert.rejects(read(0, 0, 'sha256:' + '00'.repeat(32)), NotFoundError)
  // Destroying an unread stream cancels the call instead of leaking it.
  client.readContent(digest).destroy()
})

test('pluginInfo uses PluginInfo where containerd has it and Plugins where it does not (1.6)', async (t) => {
  const old = await setup(t)
  assert.deepEqual((await old.client.pluginInfo('io.containerd.content.v1', 'content'))?.exports, { root: '/var/lib/x/content' })
  const plugins = await old.client.plugins()
  assert.equal(plugins[1]?.initError, 'skip')
  assert.equal(plugins[0]?.initError, undefined)
  const current = await setup(t, { pluginInfoImplemented: true })
  assert.deepEqual((await current.client.pluginInfo('io.containerd.content.v1', 'content'))?.exports, { root: '/from/plugininfo' })
})

test('subscribe decodes image and content events and ends with StoreUnavailableError when the stream breaks', async (t) => {
  const { client, stop } = await setup(t, {
    events: [
      { topic: '/images/create', type: 'containerd.services.images.v1.ImageCreate', payload: { name: 'example.com/app:v1', labels: { l: 'v' } } },
      { topic: '/images/update', type: 'containerd.services.images.v1.ImageUpdate', payload: { name: 'example.com/app:v1' } },
      { topic: '/images/delete', type: 'containerd.services.images.v1.ImageDelete', payload: { name: 'example.com/app:v1' } },
      { topic: '/content/create', type: 'containerd.events.ContentCreate', payload: { digest, size: 42 } },
      { topic: '/content/delete', type: 'containerd.events.ContentDelete', payload: { digest } },
    ],
  })
  const got: ContainerdEvent[] = []
  const err = await (async () => {
    for await (const e of client.subscribe(['topic~="/images/"'])) {
      got.push(e)
      if (got.length === 6) stop()
    }
  })().catch((e: unknown) => e)
  assert.ok(err instanceof StoreUnavailableError, String(err))
  assert.deepEqual(got.map((e) => e.payload), [
    { type: 'image-create', name: 'example.com/app:v1', labels: { l: 'v' } },
    { type: 'image-update', name: 'example.com/app:v1', labels: {} },
    { type: 'image-delete', name: 'example.com/app:v1' },
    { type: 'content-create', digest, size: 42 },
    { type: 'content-delete', digest },
    { type: 'unknown' },
  ])
  assert.deepEqual(got.map((e) => e.topic), ['/images/create', '/images/update', '/images/delete', '/content/create', '/content/delete', '/tasks/start'])
  assert.equal(got[0]?.namespace, 'k8s.io')
  assert.equal(got[0]?.payloadType, 'containerd.services.images.v1.ImageCreate')
  assert.deepEqual(got[0]?.timestamp, new Date(1_700_000_000_000))
  assert.equal(got[5]?.timestamp, undefined)
})

test('aborting a subscription ends it with the abort reason', async (t) => {
  const { client } = await setup(t, { events: [{ topic: '/images/delete', type: 'containerd.services.images.v1.ImageDelete', payload: { name: 'x' } }] })
  const ac = new AbortController()
  const err = await (async () => {
    for await (const e of client.subscribe([], { signal: ac.signal })) {
      assert.equal(e.topic, '/images/delete')
      ac.abort()
    }
  })().catch((e: unknown) => e)
  assert.equal((err as Error).name, 'AbortError')
  assert.throws(() => client.subscribe([], { signal: ac.signal }), { name: 'AbortError' })
  await assert.rejects(client.getImage('example.com/app:v1', { signal: ac.signal }), { name: 'AbortError' })
})

test('calls fail fast with StoreUnavailableError while the server is down and succeed again after it returns', async (t) => {
  const { client, stop, restart } = await setup(t)
  await client.getImage('example.com/app:v1')
  stop()
  const started = Date.now()
  await assert.rejects(client.getImage('example.com/app:v1'), StoreUnavailableError)
  await assert.rejects(client.contentInfo(digest), StoreUnavailableError)
  assert.ok(Date.now() - started < 5_000, 'failed fast')
  await restart()
  // Until the client has reconnected it keeps failing with StoreUnavailableError; any other error is reported on timeout.
  const image = await waitFor(async () => await client.getImage('example.com/app:v1').catch((err: unknown) => {
    if (err instanceof StoreUnavailableError) return undefined
    throw err
  }), { timeoutMs: 10_000, what: 'the client to reconnect to the restarted containerd' })
  assert.equal(image.name, 'example.com/app:v1')
})

test('a closed client fails with StoreUnavailableError', async (t) => {
  const { client } = await setup(t)
  client.close()
  client.close()
  await assert.rejects(client.getImage('example.com/app:v1'), StoreUnavailableError)
  assert.throws(() => client.subscribe(), StoreUnavailableError)
  await assert.rejects(async () => { for await (const _ of client.readContent(digest)) { /* drain */ } }, StoreUnavailableError)
})
