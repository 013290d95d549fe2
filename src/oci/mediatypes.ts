// Media types the mirror needs to recognise. Values are the OCI image-spec and Docker distribution strings.
export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  octetStream: 'application/octet-stream',
} as const

/** Media types served from the /manifests/ endpoint. */
export const manifestMediaTypes: ReadonlySet<string> = new Set([
  MediaType.ociIndex,
  MediaType.ociManifest,
  MediaType.dockerManifestList,
  MediaType.dockerManifest,
])

/** Media types whose documents list child descriptors in `manifests`. */
export const indexMediaTypes: ReadonlySet<string> = new Set([MediaType.ociIndex, MediaType.dockerManifestList])

export function isManifestMediaType (mediaType: string): boolean {
  return manifestMediaTypes.has(mediaType)
}

export function isIndexMediaType (mediaType: string): boolean {
  return indexMediaTypes.has(mediaType)
}

/** The Accept header a client sends to be given any manifest kind. */
export const manifestAccept = [...manifestMediaTypes].join(', ')
