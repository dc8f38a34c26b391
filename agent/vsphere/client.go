// Package vsphere reads VMs from a vCenter or a standalone ESXi host with
// github.com/vmware/govmomi: it logs in to a source of the registry
// (agent/sources) with the server's certificate pinned, browses the
// inventory, reads a VM's hardware from the API, and exports its disks
// into a directory (an HttpNfcLease, or the datastore's /folder service
// where the server has no ExportVm), taking and always removing a
// snapshot of a running VM when asked. The agent uses it to browse; the
// worker, in the job's unit, to export.
package vsphere

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/hyper2kvm/hyper2kvm/agent/sources"
)

// Client is a logged-in session with one source.
type Client struct {
	src *sources.Source
	vc  *vim25.Client
	sm  *session.Manager
	// IsVC says whether the server is a vCenter (else a standalone ESXi).
	IsVC bool
}

// CertificateError says the server showed a certificate other than the
// pinned one; Got is the SHA-256 fingerprint it showed.
type CertificateError struct {
	Source, File, Host string
	Got, Want          string
}

func (e *CertificateError) Error() string {
	return fmt.Sprintf("the certificate of %s (source %s) has the SHA-256 fingerprint %s, not the thumbprint %s in %s; if the server's certificate was replaced on purpose, write `thumbprint: %s` there, else do not connect: someone may be in between",
		e.Host, e.Source, e.Got, e.Want, e.File, e.Got)
}

// LoginError says the server refused the user name or password.
type LoginError struct{ Source, User string }

func (e *LoginError) Error() string {
	return fmt.Sprintf("source %s refused the login of %s: wrong user name or password; set the password again with `hyper2kvmd source set-password %s` (or fix username in its file)", e.Source, e.User, e.Source)
}

// Fingerprint is the SHA-256 fingerprint of a DER certificate, as
// sources.NormalizeThumbprint writes it.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// Connect logs in to src with password. The server's certificate must
// have src.Thumbprint as its SHA-256 fingerprint unless src.Insecure; an
// ESXi host named by a vCenter's NFC lease must show the certificate
// whose thumbprint the (authenticated) vCenter gave for it.
func Connect(ctx context.Context, src *sources.Source, password string) (*Client, error) {
	u, err := soap.ParseURL(src.URL)
	if err != nil {
		return nil, fmt.Errorf("source %s: url: %w", src.Name, err)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/sdk"
	}
	u.User = nil
	// insecure here only turns off the CA check: the certificate is
	// checked against the pin below, on every connection.
	sc := soap.NewClient(u, true)
	tr, ok := sc.Client.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("source %s: unexpected HTTP transport %T", src.Name, sc.Client.Transport)
	}
	pinHost := u.Host
	tr.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
		if src.Insecure {
			return nil
		}
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("source %s: the server showed no certificate", src.Name)
		}
		got := Fingerprint(cs.PeerCertificates[0].Raw)
		host := cs.ServerName
		if sameHost(host, pinHost) {
			if got != src.Thumbprint {
				return &CertificateError{Source: src.Name, File: src.File, Host: pinHost, Got: got, Want: src.Thumbprint}
			}
			return nil
		}
		// Another host (an ESXi host serving a vCenter's lease): its
		// thumbprint comes from the lease, SHA-1 or SHA-256.
		for _, h := range []string{host, net.JoinHostPort(host, "443")} {
			if tp := sc.Thumbprint(h); tp != "" {
				if tp == got || tp == soap.ThumbprintSHA1(cs.PeerCertificates[0]) {
					return nil
				}
			}
		}
		return fmt.Errorf("source %s: host %s showed a certificate (SHA-256 %s) that neither the source's thumbprint nor its vCenter vouches for", src.Name, host, got)
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, connectError(src, err)
	}
	c := &Client{src: src, vc: vc, sm: session.NewManager(vc), IsVC: vc.IsVC()}
	if err := c.sm.Login(ctx, url.UserPassword(src.Username, password)); err != nil {
		if fault.Is(err, &types.InvalidLogin{}) {
			return nil, &LoginError{Source: src.Name, User: src.Username}
		}
		return nil, connectError(src, err)
	}
	return c, nil
}

// sameHost compares a TLS server name with a URL's host[:port].
func sameHost(serverName, hostPort string) bool {
	h := hostPort
	if hh, _, err := net.SplitHostPort(hostPort); err == nil {
		h = hh
	}
	return strings.EqualFold(strings.Trim(h, "[]"), serverName) || serverName == ""
}

func connectError(src *sources.Source, err error) error {
	var ce *CertificateError
	if errors.As(err, &ce) {
		return ce
	}
	return fmt.Errorf("cannot connect to source %s (%s): %w", src.Name, src.URL, err)
}

// Logout ends the session; errors are of no use to the caller.
func (c *Client) Logout(ctx context.Context) {
	_ = c.sm.Logout(ctx)
}

// Source is the source this client is logged in to.
func (c *Client) Source() *sources.Source { return c.src }

func (c *Client) finder(ctx context.Context) (*find.Finder, *object.Datacenter, error) {
	f := find.NewFinder(c.vc, false)
	dc, err := f.DatacenterOrDefault(ctx, c.src.Datacenter)
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: datacenter %q: %w", c.src.Name, c.src.Datacenter, err)
	}
	f.SetDatacenter(dc)
	return f, dc, nil
}
