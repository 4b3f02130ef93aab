package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/pki"
)

func (a *app) newTLSCmd() *cobra.Command {
	tlsCmd := &cobra.Command{
		Use:   "tls",
		Short: "Certificates for the sync port",
		Args:  cobra.NoArgs,
	}
	var dir string
	var nodes []string
	var days int
	initCmd := &cobra.Command{
		Use:   "init --dir DIR --node NAME=HOST[,HOST...] ...",
		Short: "Create a CA and a certificate for each node, for mutual TLS on the sync port",
		Long: `tls init writes into DIR a CA (ca.crt, ca.key) and, for each --node, a key
and a certificate (NAME.crt, NAME.key) signed by it. A node's certificate
names the hosts the other nodes reach it by (master.host), and serves as
both server and client certificate: a failover swaps the roles. If
DIR/ca.key exists already, it signs the new nodes' certificates (adding a
slave later); a node's files are never overwritten.

Copy ca.crt and the node's two files to each node (the .key files are
0600: keep them so, readable by the user running schedsync only; ca.key
need not leave the machine) and set on every node:

    tls.cert = /etc/schedsync/NAME.crt
    tls.key  = /etc/schedsync/NAME.key
    tls.ca   = /etc/schedsync/ca.crt

With tls.ca set, the master accepts only slaves presenting a certificate
signed by that CA, and slaves accept only a master whose certificate is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ns []pki.Node
			for _, n := range nodes {
				name, hosts, ok := strings.Cut(n, "=")
				if !ok || name == "" || hosts == "" {
					return usageError(fmt.Errorf("--node %q: use NAME=HOST[,HOST...], such as master=10.0.0.1,db1.example.com", n))
				}
				ns = append(ns, pki.Node{Name: name, Hosts: strings.Split(hosts, ",")})
			}
			if dir == "" {
				return usageError(errors.New("--dir is required: where to write the CA and the certificates"))
			}
			res, err := pki.Init(dir, ns, days)
			if err != nil {
				return err
			}
			w := a.stdout
			if res.CACreated {
				fmt.Fprintf(w, "created the CA %s (key %s, 0600: keep it off the nodes)\n", res.CA, res.CAKey)
			} else {
				fmt.Fprintf(w, "signed with the existing CA %s\n", res.CA)
			}
			for _, f := range res.Nodes {
				fmt.Fprintf(w, "node %s: %s, %s; in its config:\n  tls.cert=%s\n  tls.key=%s\n  tls.ca=%s\n", f.Node, f.Cert, f.Key, f.Cert, f.Key, res.CA)
			}
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "where to write the files")
	initCmd.Flags().StringArrayVar(&nodes, "node", nil, "a node: NAME=HOST[,HOST...] (repeat for each node)")
	initCmd.Flags().IntVar(&days, "days", 825, "validity of the certificates, in days")
	tlsCmd.AddCommand(initCmd)
	return tlsCmd
}
