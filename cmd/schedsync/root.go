package main

import (
	"errors"

	"github.com/spf13/cobra"
)

const rootLong = `schedsync keeps a standby copy ("slave") of a job scheduler's PostgreSQL
repository in step with the live one ("master"), so that the slave can take
over when the master fails.

The configuration file is --config FILE, else $SCHEDSYNC_CONFIG, else
/etc/schedsync/sync.properties (.properties, .yaml, .yml or .toml). Every key
can be overridden by an environment variable SCHEDSYNC_<KEY>, with dots as
underscores: SCHEDSYNC_SPOOL_MAX_BACKLOG=2GiB.

Exit codes: 0 success; 1 failure or difference found; 2 usage or
configuration error; 3 the slave needs a re-sync.`

// Command groups, in the order an operator meets them.
const (
	groupSetup    = "setup"
	groupService  = "service"
	groupReseed   = "reseed"
	groupFailover = "failover"
)

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "schedsync [--config FILE] COMMAND",
		Short:         "Replicate a job scheduler's PostgreSQL repository to a standby",
		Long:          rootLong,
		SilenceErrors: true, // run prints errors, once, with the command's name
		SilenceUsage:  true, // a failing command is not a usage mistake
		// Without a RunE, cobra prints help and exits 0 for a bare
		// `schedsync`; a missing command is a usage error.
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("missing command")
		},
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
		Version:           version, // enables --version, same text as `version`
	}
	root.SetVersionTemplate(versionText())
	root.PersistentFlags().StringVar(&a.configFlag, "config", "",
		"config file (default $SCHEDSYNC_CONFIG, then "+defaultConfigPath+")")
	root.AddGroup(
		&cobra.Group{ID: groupSetup, Title: "Setup:"},
		&cobra.Group{ID: groupService, Title: "Sync service:"},
		&cobra.Group{ID: groupReseed, Title: "Re-seed and check a slave:"},
		&cobra.Group{ID: groupFailover, Title: "Failover:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add(groupSetup, a.newInstallCmd(), a.newUninstallCmd(), a.newGrantsCmd())
	add(groupService, a.newStartCmd(), a.newStopCmd(), a.newStatusCmd())
	add(groupReseed, a.newBackupCmd(), a.newRestoreCmd(), a.newResyncCmd(), a.newRefetchCmd(), a.newVerifyCmd())
	add(groupFailover, a.newPromoteCmd())
	add(groupFailover, a.newSwitchoverCmd())
	add(groupSetup, a.newTLSCmd())
	root.AddCommand(a.newVersionCmd())
	return root
}
