# syntax=docker/dockerfile:1
# spegel-ts image: `docker run IMAGE registry --flags…` runs the daemon, like Spegel's `/spegel` entrypoint.
# Multi-arch: `docker buildx build --platform linux/amd64,linux/arm64 .`. The dependencies are pure JavaScript (no
# native addons, no platform-specific optional packages), so the build stage runs once on the builder's own platform
# and its output is copied into each target platform's Node runtime: no emulation, no arch-specific downloads.

FROM --platform=$BUILDPLATFORM node:24-bookworm-slim AS build
WORKDIR /src
ENV NODE_ENV=development \
    npm_config_fund=false \
    npm_config_audit=false \
    npm_config_update_notifier=false
COPY package.json package-lock.json .npmrc ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# We ship compiled JavaScript rather than letting Node strip types at run time: the build type-checks (a broken tree
# fails here, not on the node), startup does no per-file transform, and no experimental-feature warning reaches logs.
# `npm run build` also copies the non-TypeScript files under src/ (containerd .proto definitions) next to the compiled
# code, where the modules that load them look; the checks make a build that forgot them fail here, not on a node.
RUN npm run build \
 && test -f dist/cli/main.js \
 && test -f dist/containerd/proto/services/content/v1/content.proto \
 && npm prune --omit=dev --ignore-scripts \
 && rm -rf node_modules/.cache

# Distroless Node 24 on Debian 12: no shell, no package manager; CA certificates and tzdata included.
# Spegel's preflight refuses to start in Kubernetes unless /etc/os-release says "Distroless"; we deliberately do not
# replicate that check (it guards nothing about correctness), although this base would pass it.
FROM gcr.io/distroless/nodejs24-debian12
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Like Spegel, run as root: the containerd socket and content store on the host are root-owned.
USER root:root
# Read-only root filesystem: Node writes nothing by default; the on-disk module compile cache stays off so nothing
# tries to write outside the volumes the chart mounts (packages can enable it via module.enableCompileCache()).
# SPEGEL_COMMIT is what `spegel version` reports as the commit (src/version.ts); the version comes from package.json.
ARG SPEGEL_COMMIT=unknown
ENV NODE_ENV=production \
    NODE_DISABLE_COMPILE_CACHE=1 \
    SPEGEL_COMMIT=$SPEGEL_COMMIT
# The V8 old-space limit is a percentage of the memory available to the process, which Node reads from the cgroup,
# i.e. the pod's memory limit (the chart sets 128Mi by default). 50 % leaves room for what lives outside the V8 heap:
# code, Buffers of streamed blobs, TLS/gRPC and libuv state. V8 then collects harder instead of letting the kernel
# OOM-kill the container. This plays the role of GOMEMLIMIT in Spegel's chart.
ENTRYPOINT ["/nodejs/bin/node", "--max-old-space-size-percentage=50", "/app/dist/cli/main.js"]
