// CoreDNS for the k8s end-to-end test (test/k8s): the cluster's DNS, built with only the plugins the test's Corefile
// uses (errors, kubernetes, cache). .ci/setup.d/50-kubernetes.sh builds it into .tools/bin/coredns.
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
