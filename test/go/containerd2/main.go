// containerd2 is containerd 2.x for the tests only: upstream's own cmd/containerd main (the daemon with its builtin
// plugins, CRI included), built from the Go module that go.mod pins, since `go install …/cmd/containerd@version` is
// refused (containerd's go.mod has exclude directives). The Debian containerd package is 1.x; this one lets the
// tests run against the 2.x line too (the version Talos ships). .ci/setup.d/40-containerd2.sh builds it into
// .tools/bin/containerd-<version>.
package main

import (
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
)

func main() {
	if err := command.App().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "containerd: %s\n", err)
		os.Exit(1)
	}
}
