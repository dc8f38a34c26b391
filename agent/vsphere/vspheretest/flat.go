package vspheretest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// PutFlatDisk makes the VM's first disk a flat one, as it lies on a VMFS
// datastore: its descriptor names NAME-flat.vmdk beside it, which gets
// the raw image at raw (whose size must be a multiple of 512).
func (a *Admin) PutFlatDisk(ctx context.Context, p, raw string) error {
	ds, file, err := a.firstDisk(ctx, p)
	if err != nil {
		return err
	}
	in, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if st.Size()%512 != 0 {
		return fmt.Errorf("%s: %d bytes, not whole sectors", raw, st.Size())
	}
	flat := strings.TrimSuffix(path.Base(file), ".vmdk") + "-flat.vmdk"
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW %d VMFS \"%s\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"14\"\n", st.Size()/512, flat)
	up := soap.DefaultUpload
	up.ContentLength = st.Size()
	if err := ds.Upload(ctx, io.Reader(in), path.Join(path.Dir(file), flat), &up); err != nil {
		return fmt.Errorf("cannot upload the flat extent: %w", err)
	}
	up.ContentLength = int64(len(desc))
	return ds.Upload(ctx, strings.NewReader(desc), file, &up)
}

// firstDisk is the datastore and path of the VM's first disk file.
func (a *Admin) firstDisk(ctx context.Context, p string) (*object.Datastore, string, error) {
	vm, err := a.vm(ctx, p)
	if err != nil {
		return nil, "", err
	}
	devs, err := vm.Device(ctx)
	if err != nil {
		return nil, "", err
	}
	disks := devs.SelectByType((*types.VirtualDisk)(nil))
	if len(disks) == 0 {
		return nil, "", fmt.Errorf("VM %s has no disk", p)
	}
	file := disks[0].(*types.VirtualDisk).Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo().FileName
	var dp object.DatastorePath
	dp.FromString(file)
	f := find.NewFinder(a.c.Client, false)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		return nil, "", err
	}
	f.SetDatacenter(dc)
	ds, err := f.Datastore(ctx, dp.Datastore)
	if err != nil {
		return nil, "", err
	}
	return ds, dp.Path, nil
}

// WrapDatastore puts wrap in front of the datastore's /folder downloads
// (GET): a test can then answer as a broken or hostile server would, or
// pass the request on to next, the simulator's own handler.
func (s *Server) WrapDatastore(wrap func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc)) {
	s.model.Service.ServeMux.HandleFunc("GET /folder/", func(w http.ResponseWriter, r *http.Request) {
		wrap(w, r, s.model.Service.ServeDatastore)
	})
}
