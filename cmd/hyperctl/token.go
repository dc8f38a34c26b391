package main

import (
	"context"
	"fmt"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/spf13/cobra"
)

// tokenClient is a client that keeps API tokens (*dbusapi.Client).
type tokenClient interface {
	CreateToken(ctx context.Context, name string) (string, string, error)
	ListTokens(ctx context.Context) ([]apitype.Token, error)
	RevokeToken(ctx context.Context, id string, interactive bool) error
}

// tokenCmd is "hyperctl token create|list|revoke".
func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke your API tokens for the REST API and dashboard",
		Long: `A token lets the REST API and the dashboard act as you: each call is authorized
by polkit as your user, so it may do what you may do with hyperctl. The agent keeps
only a hash of it (in /var/lib/hyper2kvm/tokens.json); the token is shown once,
when it is created. Give it as "Authorization: Bearer TOKEN", or paste it into the
dashboard's sign-in screen.`,
	}
	var name string
	create := &cobra.Command{
		Use:   "create [--name NAME]",
		Short: "Create a token for yourself and print it (only this once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withTokens(cmd.Context(), func(tc tokenClient) error {
				tok, id, err := tc.CreateToken(cmd.Context(), name)
				if err != nil {
					return a.apiError(err, "")
				}
				if a.jsonOutput() {
					return writeJSON(a.env.stdout, map[string]string{"id": id, "token": tok})
				}
				fmt.Fprintln(a.env.stdout, tok)
				fmt.Fprintf(a.env.stderr, "Token %s created. It is shown only now: keep it like a password.\n"+
					"Use it as \"Authorization: Bearer <token>\" or in the dashboard's sign-in screen; revoke it with: hyperctl token revoke %s\n", id, id)
				return nil
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "a name to tell the token by (default: token N)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List your tokens (root: everyone's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withTokens(cmd.Context(), func(tc tokenClient) error {
				list, err := tc.ListTokens(cmd.Context())
				if err != nil {
					return a.apiError(err, "")
				}
				if a.jsonOutput() {
					return writeJSON(a.env.stdout, map[string]any{"tokens": list})
				}
				if len(list) == 0 {
					fmt.Fprintln(a.env.stdout, "No tokens. Create one with: hyperctl token create")
					return nil
				}
				t := &table{}
				t.add(a.paint(ansiBold, "ID"), a.paint(ansiBold, "NAME"), a.paint(ansiBold, "USER"), a.paint(ansiBold, "CREATED"))
				for _, tk := range list {
					t.add(tk.ID, terminalSafe(tk.Name), tk.User, formatTime(tk.Created))
				}
				t.write(a.env.stdout)
				return nil
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: the REST API refuses it from the next call",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withTokens(cmd.Context(), func(tc tokenClient) error {
				if err := tc.RevokeToken(cmd.Context(), args[0], a.interactive()); err != nil {
					return a.apiError(err, "")
				}
				if !a.jsonOutput() {
					fmt.Fprintf(a.env.stdout, "Revoked token %s.\n", args[0])
				}
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func (a *app) withTokens(ctx context.Context, f func(tokenClient) error) error {
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	tc, ok := c.(tokenClient)
	if !ok {
		return fail(exitFailed, "cannot manage tokens: this client does not know them")
	}
	return f(tc)
}
