import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/**
 * The daemon's Prometheus metrics. Names, types and labels are Spegel's (spegel-behaviour.md §7) so existing
 * dashboards and alerts keep working.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly mirrorRequests = new Counter({ name: 'spegel_mirror_requests_total', help: 'Total number of mirror requests.', labelNames: ['registry', 'cache'] as const, registers: [this.registry] })
  readonly mirrorLastSuccess = new Gauge({ name: 'spegel_mirror_last_success_timestamp_seconds', help: 'The timestamp of the last successful mirror request.', registers: [this.registry] })
  readonly resolveDuration = new Histogram({ name: 'spegel_resolve_duration_seconds', help: 'The duration for router to resolve a peer.', labelNames: ['router'] as const, registers: [this.registry] })
  readonly advertisedImageTags = new Gauge({ name: 'spegel_advertised_image_tags', help: 'Number of advertised image tags.', labelNames: ['registry'] as const, registers: [this.registry] })
  readonly advertisedImageDigests = new Gauge({ name: 'spegel_advertised_image_digests', help: 'Number of advertised image digests.', labelNames: ['registry'] as const, registers: [this.registry] })
  readonly advertisedContentDigests = new Gauge({ name: 'spegel_advertised_content_digests', help: 'Number of advertised content digests.', labelNames: ['registry'] as const, registers: [this.registry] })
  readonly httpRequestDuration = new Histogram({ name: 'http_request_duration_seconds', help: 'The latency of the HTTP requests.', labelNames: ['handler', 'method', 'code'] as const, registers: [this.registry] })
  readonly httpResponseSize = new Histogram({
    name: 'http_response_size_bytes',
    help: 'The size of the HTTP responses.',
    labelNames: ['handler', 'method', 'code'] as const,
    buckets: Array.from({ length: 10 }, (_, i) => 1024 * 5 ** i),
    registers: [this.registry],
  })
  readonly httpRequestsInflight = new Gauge({ name: 'http_requests_inflight', help: 'The number of inflight requests being handled at the same time.', labelNames: ['handler'] as const, registers: [this.registry] })

  // Ours, beyond Spegel's: they answer "is it working?" without reading logs.
  /** Body bytes of successful GET /v2/ responses, by where they came from (`local` content store or a `peer`). */
  readonly servedBytes = new Counter({ name: 'spegel_served_bytes_total', help: 'Bytes of content served to clients, by source (local or peer).', labelNames: ['source'] as const, registers: [this.registry] })
  /** Requests to a peer that failed (`connect_timeout`, `stall`, `bad_response`, `connection`, `stream_broken`). */
  readonly peerFailures = new Counter({ name: 'spegel_peer_failures_total', help: 'Failed requests to peers, by reason.', labelNames: ['reason'] as const, registers: [this.registry] })
  readonly verificationFailures = new Counter({ name: 'spegel_verification_failures_total', help: 'Content received from peers that did not match its digest.', registers: [this.registry] })
  /** Findings of the last `doctor` run, by check; 0 means the check passed or was skipped. */
  readonly doctorFindings = new Gauge({ name: 'spegel_doctor_findings', help: 'Misconfigurations found by the last doctor run, by check.', labelNames: ['check'] as const, registers: [this.registry] })

  constructor (options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry })
      // Gauges named like counters fail `promtool check metrics`; each is the sum of its per-type gauge, which stays.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name)
    }
  }
}
