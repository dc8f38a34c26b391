// Command vcsim serves govmomi's vCenter/ESXi simulator for the end-to-end
// tests (the upstream vcsim command is a module of its own that is not
// fetched here) and shapes its first VM: the disk the test gives, CPUs,
// memory, firmware, MACs and power state. It is a test helper, never
// installed.
//
//	vcsim serve --listen 127.0.0.1:18443 --user U --password-file F [--esx] --info FILE \
//	      [--disk VMDK] [--cpus N --cores N --memory MB --firmware efi --macs a,b] [--power on|off] \
//	      [--hold-nfc FILE]
//	vcsim snapshots --info FILE --password-file F
//	vcsim power --info FILE --password-file F on|off
//	vcsim convert --info FILE --password-file F --dir D --out D [--sequential]   (bench/vsphere.sh)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hyper2kvm/hyper2kvm/agent/vsphere/vspheretest"
)

type info struct {
	URL        string `json:"url"`
	Thumbprint string `json:"thumbprint"`
	User       string `json:"user"`
	VM         string `json:"vm"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vcsim serve|snapshots|power ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "snapshots", "power":
		err = admin(os.Args[1], os.Args[2:])
	case "convert":
		err = convert(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
}

func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	return strings.TrimSpace(string(b)), err
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	user := fs.String("user", "svc", "user name")
	pwFile := fs.String("password-file", "", "file holding the password")
	esx := fs.Bool("esx", false, "a standalone ESXi host instead of a vCenter")
	infoFile := fs.String("info", "", "where to write url, thumbprint and the VM's path (JSON)")
	disk := fs.String("disk", "", "VMDK to make the first VM's disk")
	flat := fs.String("flat", "", "raw image to make the first VM's disk a flat one (descriptor + NAME-flat.vmdk)")
	cpus := fs.Int("cpus", 0, "CPUs of the first VM")
	cores := fs.Int("cores", 0, "cores per socket")
	memory := fs.Int64("memory", 0, "memory in MiB")
	firmware := fs.String("firmware", "", "bios or efi")
	macs := fs.String("macs", "", "MAC addresses of the first VM's NICs, comma-separated")
	power := fs.String("power", "", "on or off")
	hold := fs.String("hold-nfc", "", "NFC downloads wait while this file exists")
	fs.Parse(args)
	pw, err := readPassword(*pwFile)
	if err != nil {
		return err
	}
	s, err := vspheretest.Start(*esx, *listen, *user, pw)
	if err != nil {
		return err
	}
	defer s.Close()
	if *hold != "" {
		s.HoldNFC(func() bool {
			_, err := os.Stat(*hold)
			return err == nil
		})
	}
	ctx := context.Background()
	a, err := vspheretest.Dial(ctx, s.URL, *user, pw)
	if err != nil {
		return err
	}
	if *disk != "" {
		if err := a.PutDisk(ctx, s.FirstVM, *disk); err != nil {
			return fmt.Errorf("cannot put the disk: %w", err)
		}
	}
	if *flat != "" {
		if err := a.PutFlatDisk(ctx, s.FirstVM, *flat); err != nil {
			return fmt.Errorf("cannot put the flat disk: %w", err)
		}
	}
	hw := vspheretest.Hardware{CPUs: *cpus, CoresPerSocket: *cores, MemoryMB: *memory, Firmware: *firmware}
	if *macs != "" {
		hw.MACs = strings.Split(*macs, ",")
	}
	if err := a.SetHardware(ctx, s.FirstVM, hw); err != nil {
		return fmt.Errorf("cannot set the hardware: %w", err)
	}
	if *power != "" {
		if err := a.Power(ctx, s.FirstVM, *power == "on"); err != nil {
			return err
		}
	}
	a.Logout(ctx)
	b, _ := json.Marshal(info{URL: s.URL, Thumbprint: s.Thumbprint, User: *user, VM: s.FirstVM})
	if err := os.WriteFile(*infoFile+".new", b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(*infoFile+".new", *infoFile); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func admin(cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	infoFile := fs.String("info", "", "the serve command's info file")
	pwFile := fs.String("password-file", "", "file holding the password")
	fs.Parse(args)
	var in info
	b, err := os.ReadFile(*infoFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	pw, err := readPassword(*pwFile)
	if err != nil {
		return err
	}
	ctx := context.Background()
	a, err := vspheretest.Dial(ctx, in.URL, in.User, pw)
	if err != nil {
		return err
	}
	defer a.Logout(ctx)
	switch cmd {
	case "snapshots":
		names, err := a.Snapshots(ctx, in.VM)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Println(n)
		}
		return nil
	default:
		if fs.NArg() != 1 {
			return fmt.Errorf("power on|off")
		}
		return a.Power(ctx, in.VM, fs.Arg(0) == "on")
	}
}
