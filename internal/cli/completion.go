package cli

import (
	"github.com/imgbake/imgbake/internal/config"
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

// clusterNodeNames lists, for shell completion, the names of the cluster
// file's nodes that keep accepts (every node when keep is nil); none when the
// file cannot be read.
func clusterNodeNames(g *globals, keep func(*config.Node) bool) []string {
	c, err := config.Load(g.config)
	if err != nil {
		return nil
	}
	var names []string
	for i := range c.Nodes {
		if keep == nil || keep(&c.Nodes[i]) {
			names = append(names, c.Nodes[i].Name)
		}
	}
	return names
}

// completeNodeThenFile completes a node name as the first argument (an
// image path when none matches) and a device or file after it.
func completeNodeThenFile(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return clusterNodeNames(g, nil), cobra.ShellCompDirectiveDefault
		}
		return nil, cobra.ShellCompDirectiveDefault
	}
}
