// Package libvirtd defines converted VMs in libvirt through libvirt's own
// RPC protocol on its local socket (github.com/digitalocean/go-libvirt: no
// cgo, no libvirt client library, no virsh). It does only what a job's
// target needs: refuse a name or UUID already taken, check networks and
// pools, upload disks into a pool as volumes, define, autostart and start
// a domain, and undo each of these when a later step fails, so that a
// failed job leaves no half-defined VM behind. Only the engine uses it.
package libvirtd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"
)

// dialTimeout bounds connecting to the socket; calls after it are bounded
// by the caller's context.
const dialTimeout = 15 * time.Second

// Conn is a connection to one libvirt daemon.
type Conn struct {
	l    *golibvirt.Libvirt
	uri  string
	stop func() bool // ends the context watch
}

// Dial connects to the local libvirt daemon uri (qemu:///system,
// qemu:///session or qemu+unix:///system?socket=PATH; the caller has
// validated it with manifest.CheckLibvirtURI). Cancelling ctx closes the
// connection, which ends any call in flight with an error.
func Dial(ctx context.Context, uri string) (*Conn, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to libvirt %s: %w", uri, err)
	}
	sock := u.Query().Get("socket")
	if sock == "" {
		sock = defaultSocket(u.Path)
	}
	l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(sock), dialers.WithLocalTimeout(dialTimeout)))
	done := make(chan error, 1)
	go func() { done <- l.ConnectToURI(golibvirt.RemoteURI(u)) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		go func() {
			if <-done == nil {
				l.Disconnect()
			}
		}()
		return nil, fmt.Errorf("cannot connect to libvirt %s: %w", uri, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to libvirt %s (socket %s): %w; is libvirtd (or virtqemud) running?", uri, sock, err)
	}
	c := &Conn{l: l, uri: uri}
	c.stop = context.AfterFunc(ctx, func() { l.Disconnect() })
	return c, nil
}

// defaultSocket is where libvirtd listens for uri path /system or
// /session (the caller's XDG runtime directory).
func defaultSocket(path string) string {
	if path == "/session" {
		dir := os.Getenv("XDG_RUNTIME_DIR")
		if dir == "" {
			dir = fmt.Sprintf("/run/user/%d", os.Getuid())
		}
		return dir + "/libvirt/libvirt-sock"
	}
	return "/run/libvirt/libvirt-sock"
}

// Close ends the connection.
func (c *Conn) Close() error {
	c.stop()
	return c.l.Disconnect()
}

// URI is what Dial connected to.
func (c *Conn) URI() string { return c.uri }

// ErrExists is wrapped by CheckFree when a domain holds the name or UUID.
var ErrExists = errors.New("a libvirt domain with that name or UUID already exists")

// CheckFree refuses when a domain named name, or one with uuid (36
// characters; "" to skip), is already defined: the job never replaces it.
func (c *Conn) CheckFree(name, uuid string) error {
	if d, err := c.l.DomainLookupByName(name); err == nil {
		return fmt.Errorf("libvirt %s already has a domain named %q (UUID %s): %w; nothing was changed: undefine it (virsh undefine %s) or give the VM another name", c.uri, name, formatUUID(d.UUID), ErrExists, name)
	} else if !golibvirt.IsNotFound(err) {
		return fmt.Errorf("cannot look up domain %q in libvirt %s: %w", name, c.uri, err)
	}
	if uuid == "" {
		return nil
	}
	u, err := parseUUID(uuid)
	if err != nil {
		return err
	}
	if d, err := c.l.DomainLookupByUUID(u); err == nil {
		return fmt.Errorf("libvirt %s already has a domain with UUID %s (%q): %w; nothing was changed", c.uri, uuid, d.Name, ErrExists)
	} else if !golibvirt.IsNotFound(err) {
		return fmt.Errorf("cannot look up UUID %s in libvirt %s: %w", uuid, c.uri, err)
	}
	return nil
}

// Lookup is the domain named name and its inactive XML; nil when there
// is none.
func (c *Conn) Lookup(name string) (*Domain, string, error) {
	d, err := c.l.DomainLookupByName(name)
	if golibvirt.IsNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("cannot look up domain %q in libvirt %s: %w", name, c.uri, err)
	}
	x, err := c.l.DomainGetXMLDesc(d, golibvirt.DomainXMLInactive)
	if err != nil {
		return nil, "", fmt.Errorf("cannot read domain %q: %w", name, err)
	}
	return &Domain{Name: d.Name, UUID: formatUUID(d.UUID), dom: d}, x, nil
}

// Running says whether d runs (or is paused): not shut off.
func (c *Conn) Running(d *Domain) bool {
	state, _, err := c.l.DomainGetState(d.dom, 0)
	return err != nil || state != int32(golibvirt.DomainShutoff)
}

// DeleteVolume removes volume name of pool; a volume that is not there is
// no error.
func (c *Conn) DeleteVolume(pool, name string) error {
	p, err := c.pool(pool)
	if err != nil {
		return err
	}
	v, err := c.l.StorageVolLookupByName(p, name)
	if isCode(err, golibvirt.ErrNoStorageVol) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot look up volume %q in pool %q: %w", name, pool, err)
	}
	return c.Delete(&Volume{Pool: pool, Name: name, vol: v})
}

// CheckNetwork says whether the libvirt network name is defined.
func (c *Conn) CheckNetwork(name string) error {
	if _, err := c.l.NetworkLookupByName(name); err != nil {
		if isCode(err, golibvirt.ErrNoNetwork) {
			return fmt.Errorf("libvirt %s has no network %q (virsh net-list --all lists them)", c.uri, name)
		}
		return fmt.Errorf("cannot look up network %q in libvirt %s: %w", name, c.uri, err)
	}
	return nil
}

// CheckVolumes refuses when pool does not exist or already holds a volume
// of one of names.
func (c *Conn) CheckVolumes(pool string, names []string) error {
	p, err := c.pool(pool)
	if err != nil {
		return err
	}
	// A volume made outside libvirt's knowledge (a file copied into a dir
	// pool) is seen after a refresh; a refresh that fails is no refusal.
	c.l.StoragePoolRefresh(p, 0)
	for _, n := range names {
		if _, err := c.l.StorageVolLookupByName(p, n); err == nil {
			return fmt.Errorf("storage pool %q of libvirt %s already holds a volume %q; nothing was changed: remove it or give the VM another name", pool, c.uri, n)
		} else if !isCode(err, golibvirt.ErrNoStorageVol) {
			return fmt.Errorf("cannot look up volume %q in pool %q: %w", n, pool, err)
		}
	}
	return nil
}

func (c *Conn) pool(name string) (golibvirt.StoragePool, error) {
	p, err := c.l.StoragePoolLookupByName(name)
	if err != nil {
		if isCode(err, golibvirt.ErrNoStoragePool) {
			return p, fmt.Errorf("libvirt %s has no storage pool %q (virsh pool-list --all lists them)", c.uri, name)
		}
		return p, fmt.Errorf("cannot look up storage pool %q in libvirt %s: %w", name, c.uri, err)
	}
	return p, nil
}

// Volume is a disk uploaded into a pool.
type Volume struct {
	Pool, Name, Path string
	vol              golibvirt.StorageVol
}

// Upload creates volume name in pool and streams the file at src into it
// through libvirt, so that libvirt owns and labels it whatever the pool's
// type. The volume is made raw with the file's size and the pool refreshed
// after, so that libvirt probes the real format (qcow2) from the bytes.
// A failed upload deletes the volume it created.
//
// progress, when not nil, is called with the bytes sent so far and the
// total, at most every 64 MiB.
func (c *Conn) Upload(ctx context.Context, pool, name, src string, progress func(done, total int64)) (*Volume, error) {
	p, err := c.pool(pool)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("cannot upload %s: %w", src, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot upload %s: %w", src, err)
	}
	size := st.Size()
	vx := libvirtxml.StorageVolume{
		Name:       name,
		Capacity:   &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: uint64(size)},
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0},
		Target:     &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
	}
	xml, err := vx.Marshal()
	if err != nil {
		return nil, fmt.Errorf("cannot describe volume %s: %w", name, err)
	}
	vol, err := c.l.StorageVolCreateXML(p, xml, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot create volume %q in pool %q: %w", name, pool, err)
	}
	v := &Volume{Pool: pool, Name: name, vol: vol}
	if err := c.l.StorageVolUpload(vol, &ctxReader{ctx: ctx, r: f, total: size, progress: progress}, 0, uint64(size), 0); err != nil {
		c.Delete(v)
		return nil, fmt.Errorf("cannot upload %s into volume %q of pool %q: %w", src, name, pool, err)
	}
	c.l.StoragePoolRefresh(p, 0)
	if v.Path, err = c.l.StorageVolGetPath(vol); err != nil {
		v.Path = ""
	}
	return v, nil
}

// Delete removes a volume Upload created.
func (c *Conn) Delete(v *Volume) error {
	if err := c.l.StorageVolDelete(v.vol, 0); err != nil {
		return fmt.Errorf("cannot delete volume %q of pool %q: %w", v.Name, v.Pool, err)
	}
	return nil
}

// Domain is a domain Define created.
type Domain struct {
	Name, UUID string
	dom        golibvirt.Domain
}

// Define defines the domain xml, which libvirt validates against its
// schema. libvirt itself refuses a name or UUID already taken by another
// domain; CheckFree first says so clearly.
func (c *Conn) Define(name, uuid, xml string) (*Domain, error) {
	if err := c.CheckFree(name, uuid); err != nil {
		return nil, err
	}
	d, err := c.l.DomainDefineXMLFlags(xml, golibvirt.DomainDefineValidate)
	if err != nil {
		return nil, fmt.Errorf("libvirt %s refused to define domain %q: %w", c.uri, name, err)
	}
	return &Domain{Name: d.Name, UUID: formatUUID(d.UUID), dom: d}, nil
}

// HasKVM says whether libvirt can run x86_64 guests with KVM (a host
// without /dev/kvm, or a container, has only QEMU's emulation).
func (c *Conn) HasKVM() (bool, error) {
	x, err := c.l.ConnectGetCapabilities()
	if err != nil {
		return false, fmt.Errorf("cannot read the capabilities of libvirt %s: %w", c.uri, err)
	}
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(x); err != nil {
		return false, fmt.Errorf("cannot read the capabilities of libvirt %s: %w", c.uri, err)
	}
	for _, g := range caps.Guests {
		if g.OSType != "hvm" || g.Arch.Name != "x86_64" {
			continue
		}
		for _, d := range g.Arch.Domains {
			if d.Type == "kvm" {
				return true, nil
			}
		}
	}
	return false, nil
}

// SetAutostart marks d to start with the host.
func (c *Conn) SetAutostart(d *Domain) error {
	if err := c.l.DomainSetAutostart(d.dom, 1); err != nil {
		return fmt.Errorf("cannot mark domain %q autostart: %w", d.Name, err)
	}
	return nil
}

// Start starts d.
func (c *Conn) Start(d *Domain) error {
	if err := c.l.DomainCreate(d.dom); err != nil {
		return fmt.Errorf("cannot start domain %q: %w", d.Name, err)
	}
	return nil
}

// XML is d's definition as libvirt holds it (with the MACs and firmware
// paths it filled in).
func (c *Conn) XML(d *Domain) (string, error) {
	x, err := c.l.DomainGetXMLDesc(d.dom, 0)
	if err != nil {
		return "", fmt.Errorf("cannot read domain %q back: %w", d.Name, err)
	}
	return x, nil
}

// Undefine removes d (stopping it first if it runs) with its NVRAM file:
// the undo of Define.
func (c *Conn) Undefine(d *Domain) error {
	if state, _, err := c.l.DomainGetState(d.dom, 0); err == nil && state != int32(golibvirt.DomainShutoff) {
		c.l.DomainDestroy(d.dom)
	}
	if err := c.l.DomainUndefineFlags(d.dom, golibvirt.DomainUndefineNvram|golibvirt.DomainUndefineManagedSave|golibvirt.DomainUndefineSnapshotsMetadata); err != nil {
		return fmt.Errorf("cannot undefine domain %q: %w", d.Name, err)
	}
	return nil
}

func isCode(err error, code golibvirt.ErrorNumber) bool {
	var le golibvirt.Error
	return errors.As(err, &le) && le.Code == uint32(code)
}

func formatUUID(u golibvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func parseUUID(s string) (golibvirt.UUID, error) {
	var u golibvirt.UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) {
		return u, fmt.Errorf("%q is not a UUID", s)
	}
	copy(u[:], b)
	return u, nil
}

// ctxReader ends an upload when the job is cancelled, and reports its
// progress.
type ctxReader struct {
	ctx         context.Context
	r           io.Reader
	done, total int64
	reported    int64
	progress    func(done, total int64)
}

// progressEvery is how many bytes pass between two progress reports.
const progressEvery = 64 << 20

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.done += int64(n)
	if c.progress != nil && (c.done-c.reported >= progressEvery || errors.Is(err, io.EOF)) {
		c.reported = c.done
		c.progress(c.done, c.total)
	}
	return n, err
}
