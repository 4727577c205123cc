package cli

import (
	"fmt"

	"github.com/imgbake/imgbake/internal/version"
	"github.com/spf13/cobra"
)

func (a *App) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print imgbake's version",
		Args:    exactArgs(0, "no arguments"),
		Example: "  imgbake version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.Stdout, "imgbake %s\n", version.String())
			return nil
		},
	}
}
