# syntax=docker/dockerfile:1
# spegel-ts image: `docker run IMAGE registry --flags…` runs the daemon, like Spegel's `/spegel` entrypoint.
# Multi-arch: `docker buildx build --platform linux/amd64,linux/arm64 .`. The runtime dependencies are pure JavaScript
# (no native addons), so the build stage runs once on the builder's own platform (where esbuild's native binary comes
# from its npm package) and its output, one JavaScript file, is copied into each target platform's Node runtime: no
# emulation, no arch-specific downloads.

FROM --platform=$BUILDPLATFORM node:24-bookworm-slim AS build
WORKDIR /src
ENV NODE_ENV=development \
    npm_config_fund=false \
    npm_config_audit=false \
    npm_config_update_notifier=false
COPY package.json package-lock.json .npmrc ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
# We ship a minified esbuild bundle (dist/spegel.mjs and the dist/spegel-*.mjs modules it loads) rather than the
# TypeScript sources or a node_modules tree: the build type-checks first (a broken tree fails here, not on the node),
# startup does no per-file transform, and the daemon holds about half the JavaScript heap it would with the unbundled
# tree (~14 MiB instead of ~31 MiB), which is what keeps it under 100 MiB RSS while serving (docs/benchmarks.md;
# scripts/bundle.ts says why it is split into several modules). The containerd .proto definitions are loaded relative
# to the bundle, from dist/proto/, and kad-dht's table of key prefixes from dist/spegel-kad-prefixes.bin.
RUN npm run typecheck \
 && npm run bundle \
 && test -f dist/spegel.mjs && test -f dist/proto/services/content/v1/content.proto && test -f dist/spegel-kad-prefixes.bin

# Distroless Node 24 on Debian 12: no shell, no package manager; CA certificates and tzdata included.
# Spegel's preflight refuses to start in Kubernetes unless /etc/os-release says "Distroless"; we deliberately do not
# replicate that check (it guards nothing about correctness), although this base would pass it.
FROM gcr.io/distroless/nodejs24-debian12
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/dist/spegel.mjs /src/dist/spegel-* /src/dist/spegel.LEGAL.txt ./dist/
COPY --from=build /src/dist/proto ./dist/proto
# Like Spegel, run as root: the containerd socket and content store on the host are root-owned.
USER root:root
# Read-only root filesystem: Node writes nothing by default; the on-disk module compile cache stays off so nothing
# tries to write outside the volumes the chart mounts.
# SPEGEL_COMMIT is what `spegel version` reports as the commit (src/version.ts); the version comes from package.json.
# glibc: a fixed mmap threshold returns freed blob buffers to the kernel instead of growing the heap, and two arenas
# are plenty for one JavaScript thread plus libuv's pool.
ARG SPEGEL_COMMIT=unknown
ENV NODE_ENV=production \
    NODE_DISABLE_COMPILE_CACHE=1 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    SPEGEL_COMMIT=$SPEGEL_COMMIT
# The V8 old-space limit is a percentage of the memory available to the process, which Node reads from the cgroup,
# i.e. the pod's memory limit (the chart sets 128Mi by default). 50 % leaves room for what lives outside the V8 heap:
# code, Buffers of streamed blobs, gRPC and libuv state. V8 then collects harder instead of letting the kernel
# OOM-kill the container. This plays the role of GOMEMLIMIT in Spegel's chart. A 1 MiB young generation (instead of
# up to 16 MiB per semi-space) costs nothing measurable here: blob bytes never pass through the JavaScript heap.
# --expose-gc: after a burst of transfers the daemon drops its spare transfer buffers and asks for one collection (at
# most one per 30 s), so their memory goes back to the node soon instead of at some later GC (src/registry/buffers.ts).
ENTRYPOINT ["/nodejs/bin/node", "--max-old-space-size-percentage=50", "--max-semi-space-size=1", "--expose-gc", "/app/dist/spegel.mjs"]
