package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/qemuimg"
	"github.com/hyper2kvm/hyper2kvm/agent/sources"
	"github.com/hyper2kvm/hyper2kvm/agent/vsphere"
)

// convert is the benchmark's "ours" (bench/vsphere.sh): the served VM's
// disks downloaded and converted to qcow2 by agent/vsphere, with the
// certificate pinned to the served thumbprint. Overlapped
// (ExportConverted), or with --sequential as the worker does without it:
// Export (the whole download), then qemu-img convert of the descriptor.
// Prints {"seconds": ...} on stdout.
func convert(args []string) error {
	fs := flag.NewFlagSet("convert", flag.ExitOnError)
	infoFile := fs.String("info", "", "the serve command's info file")
	pwFile := fs.String("password-file", "", "file holding the password")
	dir := fs.String("dir", "", "download directory (must exist)")
	out := fs.String("out", "", "output directory (must exist)")
	sequential := fs.Bool("sequential", false, "download whole, then convert")
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
	start := time.Now()
	src := &sources.Source{Name: "bench", File: *infoFile, Type: "vsphere", URL: in.URL, Username: in.User, Thumbprint: in.Thumbprint, MaxParallelExports: 2}
	c, err := vsphere.Connect(ctx, src, pw)
	if err != nil {
		return err
	}
	defer c.Logout(ctx)
	obj, err := c.FindVM(ctx, vsphere.Ref{Path: in.VM})
	if err != nil {
		return err
	}
	vm, err := c.ReadVM(ctx, obj)
	if err != nil {
		return err
	}
	if *sequential {
		disks, err := c.Export(ctx, vm, vsphere.ExportOptions{Dir: *dir})
		if err != nil {
			return err
		}
		for _, d := range disks {
			if _, err := qemuimg.Convert(ctx, qemuimg.ConvertOptions{Source: d.File, SourceFormat: "vmdk", Target: filepath.Join(*out, d.ID+".qcow2"), TargetFormat: "qcow2"}); err != nil {
				return err
			}
		}
	} else if _, err := c.ExportConverted(ctx, vm, vsphere.StreamOptions{Dir: *dir, OutDir: *out}); err != nil {
		return err
	}
	fmt.Printf("{\"seconds\": %.3f}\n", time.Since(start).Seconds())
	return nil
}
