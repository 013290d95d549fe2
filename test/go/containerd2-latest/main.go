// containerd2-latest is the newest containerd 2.x the Go module proxy served when go.mod was last updated, for the
// tests only: the same main as ../containerd2 (which pins the 2.1 line that Talos ships), so every containerd-backed
// test also runs against what Talos will ship next. .ci/setup.d/40-containerd2.sh builds it into
// .tools/bin/containerd-<version>. (From 2.2 on, the app is a urfave/cli v3 command: Run takes a context.)
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
)

func main() {
	if err := command.App().Run(context.Background(), os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "containerd: %s\n", err)
		os.Exit(1)
	}
}
