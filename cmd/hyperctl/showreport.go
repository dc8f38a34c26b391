package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
	"github.com/hyper2kvm/hyper2kvm/agent/report"
)

// reportReader is a client that reads jobs' reports (*dbusapi.Client).
type reportReader interface {
	JobReport(ctx context.Context, id string, interactive bool) ([]byte, error)
}

// printReport prints what a finished job's report says it found and did:
// the guest's operating system and every change FIX made, as a diff.
// Nothing when the client cannot read reports or the job has none.
func (a *app) printReport(ctx context.Context, c agentClient, j jobs.Job) {
	rr, ok := c.(reportReader)
	if !ok || !j.State.Ready() {
		return
	}
	data, err := rr.JobReport(ctx, j.ID, false)
	var rep report.Report
	if err != nil || len(data) == 0 || json.Unmarshal(data, &rep) != nil {
		return
	}
	w := a.env.stdout
	os := "not inspected"
	if rep.Guest != nil {
		os = "none found"
		if g := rep.Guest.OS; g != nil {
			os = g.Pretty
			if os == "" {
				os = strings.TrimSpace(g.ID + " " + g.VersionID)
			}
			if os == "" {
				os = g.Type
			}
		}
	}
	fmt.Fprintf(w, "\nGuest OS: %s\n", terminalSafe(os))
	printTarget(w, rep.Target)
	if len(rep.Changes) == 0 {
		fmt.Fprintln(w, "Changes: none")
		return
	}
	fmt.Fprintf(w, "Changes (%d):\n", len(rep.Changes))
	for _, ch := range rep.Changes {
		head := ch.Fix + ": " + ch.File
		if ch.Note != "" {
			head += " (" + ch.Note + ")"
		}
		fmt.Fprintln(w, "  "+a.paint(ansiBold, terminalSafe(head)))
		for _, l := range lineDiff(ch.Before, ch.After) {
			colour := ""
			switch l[0] {
			case '-':
				colour = ansiRed
			case '+':
				colour = ansiGreen
			}
			l = terminalSafe(l)
			if colour != "" {
				l = a.paint(colour, l)
			}
			fmt.Fprintln(w, "    "+l)
		}
	}
}

// printTarget prints the converted VM's domain: its UUID, what the job
// did in libvirt, and each NIC's MAC and where it was attached, which is
// what a sysadmin looks up next in `virsh list --all` and DHCP.
func printTarget(w io.Writer, t *report.Target) {
	if t == nil || t.Domain == "" {
		return
	}
	fmt.Fprintf(w, "Domain: %s (UUID %s, %s)\n", terminalSafe(t.Domain), terminalSafe(t.UUID), terminalSafe(t.Firmware))
	if lv := t.Libvirt; lv != nil {
		var did []string
		if lv.Defined {
			did = append(did, "defined")
		}
		if lv.Started {
			did = append(did, "started")
		}
		if lv.Autostart {
			did = append(did, "autostart")
		}
		if lv.Pool != "" {
			did = append(did, "disks in pool "+lv.Pool)
		}
		if lv.Emulated {
			did = append(did, "type qemu (no KVM)")
		}
		if len(did) == 0 {
			did = append(did, "not defined")
		}
		fmt.Fprintf(w, "Libvirt: %s: %s\n", terminalSafe(lv.URI), terminalSafe(strings.Join(did, ", ")))
	}
	for _, n := range t.NICs {
		on := "network " + n.Network
		if n.Bridge != "" {
			on = "bridge " + n.Bridge
		}
		from := ""
		if n.Source != "" {
			from = fmt.Sprintf(" (source network %q)", n.Source)
		}
		fmt.Fprintf(w, "  NIC %s on %s%s\n", terminalSafe(n.MAC), terminalSafe(on), terminalSafe(from))
	}
}

// lineDiff is a line diff of a and b: "  " kept, "- " removed, "+ " added
// (longest common subsequence; the files FIX edits are small, and a pair
// too large for it is shown as all removed, all added).
func lineDiff(a, b string) []string {
	x := strings.Split(strings.TrimSuffix(a, "\n"), "\n")
	y := strings.Split(strings.TrimSuffix(b, "\n"), "\n")
	if a == "" {
		x = nil
	}
	if b == "" {
		y = nil
	}
	n, m := len(x), len(y)
	var out []string
	if n*m > 250000 {
		for _, l := range x {
			out = append(out, "- "+l)
		}
		for _, l := range y {
			out = append(out, "+ "+l)
		}
		return out
	}
	L := make([][]int, n+1)
	for i := range L {
		L[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for k := m - 1; k >= 0; k-- {
			if x[i] == y[k] {
				L[i][k] = L[i+1][k+1] + 1
			} else {
				L[i][k] = max(L[i+1][k], L[i][k+1])
			}
		}
	}
	i, k := 0, 0
	for i < n && k < m {
		switch {
		case x[i] == y[k]:
			out = append(out, "  "+x[i])
			i, k = i+1, k+1
		case L[i+1][k] >= L[i][k+1]:
			out = append(out, "- "+x[i])
			i++
		default:
			out = append(out, "+ "+y[k])
			k++
		}
	}
	for ; i < n; i++ {
		out = append(out, "- "+x[i])
	}
	for ; k < m; k++ {
		out = append(out, "+ "+y[k])
	}
	return out
}
