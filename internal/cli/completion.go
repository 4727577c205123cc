package cli

import (
	"github.com/spf13/cobra"
)

func (a *App) completionCommand() *cobra.Command {
	return &cobra.Command{
		Use:       "completion bash|zsh|fish",
		Short:     "Print a shell completion script",
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      exactArgs(1, "one shell: bash, zsh or fish"),
		Example: `  imgbake completion bash > /etc/bash_completion.d/imgbake
  imgbake completion zsh > "${fpath[1]}/_imgbake"
  imgbake completion fish > ~/.config/fish/completions/imgbake.fish`,
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(a.Stdout, true)
			case "zsh":
				return root.GenZshCompletion(a.Stdout)
			case "fish":
				return root.GenFishCompletion(a.Stdout, true)
			}
			return usagef("unknown shell %q: use bash, zsh or fish", args[0])
		},
	}
}
