// The chosen dependencies loaded, nothing started: bench/floor.ts bundles this file with scripts/bundle.ts and reads
// Node's idle memory with it, the floor under the daemon's own.
import * as identify from '@libp2p/identify'
import * as kadDht from '@libp2p/kad-dht'
import * as tcp from '@libp2p/tcp'
import * as noise from '@chainsafe/libp2p-noise'
import * as yamux from '@chainsafe/libp2p-yamux'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import * as fastify from 'fastify'
import * as libp2p from 'libp2p'
import * as promClient from 'prom-client'

// Kept reachable, so that the bundler keeps every module and Node evaluates it.
;(globalThis as { loaded?: unknown[] }).loaded = [identify, kadDht, tcp, noise, yamux, grpc, protoLoader, fastify, libp2p, promClient]
setInterval(() => {}, 1000)
