package report

// Guest is what INSPECT found inside the image.
type Guest struct {
	PartitionTable string      `json:"partition_table,omitempty"` // mbr | gpt | none
	Partitions     []Partition `json:"partitions,omitempty"`
	OS             *OS         `json:"os,omitempty"`
	Root           string      `json:"root,omitempty"` // partition holding /
	// RootSubvol is the btrfs subvolume holding / ("@"), empty when / is
	// the filesystem's default subvolume.
	RootSubvol    string       `json:"root_subvol,omitempty"`
	Kernels       []string     `json:"kernels,omitempty"`
	Initramfs     []string     `json:"initramfs,omitempty"`
	InitramfsTool string       `json:"initramfs_tool,omitempty"` // initramfs-tools | dracut
	BootLoader    string       `json:"boot_loader,omitempty"`    // grub2-bios | grub2-efi | none
	BLS           bool         `json:"bls,omitempty"`
	Fstab         []MountEntry `json:"fstab,omitempty"`
	Crypttab      []MountEntry `json:"crypttab,omitempty"`
	Network       []string     `json:"network,omitempty"` // ifupdown netplan networkmanager ifcfg systemd-networkd
	VMwareTools   []string     `json:"vmware_tools,omitempty"`
	Firmware      string       `json:"firmware,omitempty"` // bios | efi
	// Windows is what the registry says, for a Windows guest.
	Windows *Windows `json:"windows,omitempty"`
	// Backend is the guest-access backend INSPECT used (native | guestfs)
	// and BackendReason why, when the manifest said auto.
	Backend       string `json:"backend,omitempty"`
	BackendReason string `json:"backend_reason,omitempty"`
}

// Partition is one partition and its filesystem.
type Partition struct {
	Number    int    `json:"number"`
	Start     int64  `json:"start"` // bytes
	Size      int64  `json:"size"`  // bytes
	Type      string `json:"type"`
	PartUUID  string `json:"partuuid,omitempty"`
	PartLabel string `json:"partlabel,omitempty"`
	FSType    string `json:"fstype,omitempty"`
	UUID      string `json:"uuid,omitempty"`
	Label     string `json:"label,omitempty"`
	// Dirty: the filesystem's journal needs recovery (ext3/ext4 whose
	// guest was not shut down cleanly).
	Dirty bool `json:"dirty,omitempty"`
	// FreeBytes is the free space the filesystem's superblock recorded at
	// its last unmount (ext2/3/4, xfs); absent when unknown.
	FreeBytes *int64 `json:"free_bytes,omitempty"`
	// Disk is the index of the VM's disk the filesystem lives on (0 is the
	// first disk), DiskName how the source names that disk (file or OVF
	// member), and Device the kernel name it had on the source VM
	// (/dev/sdb1).
	Disk     int    `json:"disk"`
	DiskName string `json:"disk_name,omitempty"`
	Device   string `json:"device,omitempty"`
	// MountPoint is where the guest's fstab mounts it ("/", "/boot", "/data").
	MountPoint string `json:"mount_point,omitempty"`
	// LV is "VG/LV" for an LVM logical volume (Type "lvm-lv"); Start and
	// Size are then its bytes on the disk holding its PV, for a linear LV.
	LV string `json:"lv,omitempty"`
	// Note says why a filesystem cannot be opened by the native backend
	// (a striped or thin LV, ...).
	Note string `json:"note,omitempty"`
	// Disks lists every disk (0 for the first) a volume assembled across
	// disks lives on: an md array's members, an LV's extents. Absent for
	// a filesystem on one disk. FIX writes all of them or none.
	Disks []int `json:"disks,omitempty"`
}

// OS identifies the guest.
type OS struct {
	Type      string `json:"type"` // linux | windows | unknown
	ID        string `json:"id,omitempty"`
	VersionID string `json:"version_id,omitempty"`
	Pretty    string `json:"pretty_name,omitempty"`
}

// MountEntry is a line of fstab or crypttab.
type MountEntry struct {
	Device     string `json:"device"`
	MountPoint string `json:"mount_point,omitempty"`
	FSType     string `json:"fstype,omitempty"`
	Options    string `json:"options,omitempty"` // fstab's fourth field
}

// Change is one modification FIX made inside the guest.
type Change struct {
	Fix    string `json:"fix"` // fstab grub initramfs network vmware_tools
	File   string `json:"file"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	Note   string `json:"note,omitempty"`
	// Disks names the VM's disks (source file or OVF member) the change
	// was written to: the disk of the filesystem holding File, or every
	// disk of an md array or an LV across disks.
	Disks []string `json:"disks,omitempty"`
}
