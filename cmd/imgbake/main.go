// Command imgbake bakes per-node k3s images for Raspberry Pi clusters.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/imgbake/imgbake/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := &cli.App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Getenv}
	code := app.Execute(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
