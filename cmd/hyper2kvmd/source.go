package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hyper2kvm/hyper2kvm/agent/sources"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
)

func newSourceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "source",
		Short: "Manage the sources a manifest can read VMs from (/etc/hyper2kvm/sources.d)",
		Long: `A source is a vCenter or ESXi host an administrator defines in
/etc/hyper2kvm/sources.d/NAME.yaml (docs/SOURCES.md). Its password is kept
apart, encrypted with systemd-creds, and given only to the units that need it.`,
	}
	var dir, credDir string
	cmd.PersistentFlags().StringVar(&dir, "sources-dir", sources.DefaultDir, "the source registry")
	cmd.PersistentFlags().StringVar(&credDir, "credentials-dir", sources.DefaultCredentialDir, "where the encrypted passwords are kept")

	setPassword := &cobra.Command{
		Use:   "set-password NAME",
		Short: "Store the password of source NAME, encrypted with systemd-creds (read from standard input)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if _, err := sources.Get(dir, name); err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin(), cmd.ErrOrStderr(), name)
			if err != nil {
				return err
			}
			if err := sources.SealPassword(cmd.Context(), credDir, name, pw); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored the password of source %s in %s\n", name, sources.CredentialPath(credDir, name))
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the sources and the problems of invalid source files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := sources.Load(dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, n := range reg.Names() {
				s := reg.Sources[n]
				pw := "password set"
				if _, err := os.Stat(sources.CredentialPath(credDir, n)); err != nil {
					pw = "NO PASSWORD (hyper2kvmd source set-password " + n + ")"
				}
				fmt.Fprintf(out, "%s\t%s\t%s\t%s\t%s\n", n, s.Type, s.URL, s.Username, pw)
			}
			for _, e := range reg.Errors {
				fmt.Fprintf(cmd.ErrOrStderr(), "invalid: %v\n", e)
			}
			return nil
		},
	}
	var asJSON bool
	browse := &cobra.Command{
		Use:   "browse NAME [PATH]",
		Short: "List a folder of source NAME's inventory (the agent runs it in a unit of its own, with the source's credential)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			entries, err := browseSource(cmd.Context(), dir, credDir, args[0], p)
			if asJSON {
				return writeBrowse(cmd.OutOrStdout(), entries, err)
			}
			if err != nil {
				return err
			}
			for _, e := range entries {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", e.Kind, e.Path, e.PowerState)
			}
			return nil
		},
	}
	browse.Flags().BoolVar(&asJSON, "json", false, "answer one JSON object: {entries} or {error, kind}")
	cmd.AddCommand(setPassword, list, browse)
	return cmd
}

// browseSource logs in with the unit's credential when it has one (the
// agent's browse unit), else decrypts the stored password (root at a
// shell).
func browseSource(ctx context.Context, dir, credDir, name, p string) ([]vsphere.Entry, error) {
	src, err := sources.Get(dir, name)
	if err != nil {
		return nil, err
	}
	var pw []byte
	if os.Getenv("CREDENTIALS_DIRECTORY") != "" {
		pw, err = sources.UnitPassword(name)
	} else {
		pw, err = sources.OpenPassword(ctx, credDir, name)
	}
	if err != nil {
		return nil, err
	}
	c, err := vsphere.Connect(ctx, src, string(pw))
	if err != nil {
		return nil, err
	}
	defer c.Logout(context.WithoutCancel(ctx))
	return c.Browse(ctx, p)
}

// browseAnswer is what browse --json prints: the agent reads it back.
type browseAnswer struct {
	Entries []vsphere.Entry `json:"entries"`
	Error   string          `json:"error,omitempty"`
	Kind    string          `json:"kind,omitempty"` // not-found | certificate | login | other
}

func writeBrowse(w io.Writer, entries []vsphere.Entry, err error) error {
	a := browseAnswer{Entries: entries}
	if a.Entries == nil {
		a.Entries = []vsphere.Entry{}
	}
	if err != nil {
		a.Error, a.Kind = err.Error(), "other"
		switch {
		case errors.As(err, new(*vsphere.NotFoundError)), errors.Is(err, sources.ErrNotFound):
			a.Kind = "not-found"
		case errors.As(err, new(*vsphere.CertificateError)):
			a.Kind = "certificate"
		case errors.As(err, new(*vsphere.LoginError)):
			a.Kind = "login"
		}
	}
	return json.NewEncoder(w).Encode(a)
}

// readPassword reads one line; on a terminal without echo, and twice.
func readPassword(in io.Reader, prompt io.Writer, name string) ([]byte, error) {
	f, isFile := in.(*os.File)
	if isFile {
		if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			old := *t
			t.Lflag &^= unix.ECHO
			if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err == nil {
				defer unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &old)
				r := bufio.NewReader(f)
				fmt.Fprintf(prompt, "password of source %s: ", name)
				a, err := r.ReadString('\n')
				fmt.Fprintln(prompt)
				if err != nil {
					return nil, errors.New("no password read")
				}
				fmt.Fprintf(prompt, "again: ")
				b, _ := r.ReadString('\n')
				fmt.Fprintln(prompt)
				if a != b {
					return nil, errors.New("the two passwords differ; nothing was stored")
				}
				return []byte(strings.TrimRight(a, "\r\n")), nil
			}
		}
	}
	b, err := io.ReadAll(io.LimitReader(in, 4097))
	if err != nil {
		return nil, fmt.Errorf("cannot read the password: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if strings.ContainsAny(pw, "\n") {
		return nil, errors.New("the password must be one line")
	}
	if pw == "" {
		return nil, errors.New("no password on standard input (e.g. `hyper2kvmd source set-password NAME < file`)")
	}
	return []byte(pw), nil
}
