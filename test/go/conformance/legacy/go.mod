module spegel-ts/test/go/conformance/legacy

go 1.24.0

require github.com/opencontainers/distribution-spec/conformance v0.0.0-20231101194043-f2182352d4cc
