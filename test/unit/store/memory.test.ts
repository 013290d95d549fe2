import { randomBytes } from 'node:crypto'
import { MemoryStore } from '../../../src/store/memory.ts'
import { storeConformance } from '../../store/conformance.ts'

storeConformance('MemoryStore', async () => {
  const store = new MemoryStore()
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })
  const configDigest = store.addBlob(config, 'application/vnd.oci.image.config.v1+json')
  const layer = randomBytes(300_000)
  const layerDigest = store.addBlob(layer, 'application/vnd.oci.image.layer.v1.tar+gzip')
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.byteLength }],
  })
  const manifestDigest = store.addBlob(manifest)
  store.addImage('example.com/org/app:v1', manifestDigest)
  return {
    store,
    name: 'memory',
    existingRef: 'example.com/org/app:v1',
    existingRefDigest: manifestDigest,
    notFoundRef: 'example.com/org/app:missing',
    notFoundDigest: 'sha256:' + '0'.repeat(64),
    existingDescriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length },
    moreDescriptors: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.byteLength },
      { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    ],
    addContent: async (bytes) => store.addBlob(bytes),
    deleteContent: async (digest) => { store.deleteBlob(digest) },
  }
})
