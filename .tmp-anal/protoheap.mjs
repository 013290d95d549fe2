import { loadSync } from '@grpc/proto-loader'
const files = ['services/images/v1/images.proto','services/content/v1/content.proto','services/events/v1/events.proto','services/introspection/v1/introspection.proto','events/image.proto','events/content.proto']
globalThis.gc(); globalThis.gc(); const h0 = process.memoryUsage().heapUsed; const t0 = performance.now(); const c0 = process.cpuUsage()
const pkg = loadSync(files, { includeDirs: ['dist/proto'], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true })
const c = process.cpuUsage(c0); const t = performance.now() - t0
globalThis.gc(); globalThis.gc(); const h1 = process.memoryUsage().heapUsed
console.log('retained by proto-loader definitions', ((h1 - h0) / 1048576).toFixed(2), 'MiB; load', t.toFixed(0), 'ms, cpu', ((c.user + c.system) / 1000).toFixed(0), 'ms', Object.keys(pkg).length, 'entries')
globalThis.keep = pkg
