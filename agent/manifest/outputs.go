package manifest

// The files a job writes beside its disks are named after the VM, so that
// many VMs share one directory or pool: NAME.qcow2, NAME-disk2.qcow2 (the
// disks, Convert.OutputFor), NAME.xml, NAME.report.json and, with a boot
// test, NAME.boot-console.log, with target.kubevirt NAME.kubevirt.yaml.

// DomainXMLFile is the libvirt domain XML of the VM name.
func DomainXMLFile(name string) string { return name + ".xml" }

// ReportFile is the engine's report of the VM name.
func ReportFile(name string) string { return name + ".report.json" }

// ConsoleFile is the serial console log of the VM name's boot test.
func ConsoleFile(name string) string { return name + ".boot-console.log" }

// KubeVirtFile holds the KubeVirt objects of the VM name
// (pipeline.target.kubevirt).
func KubeVirtFile(name string) string { return name + ".kubevirt.yaml" }

// SideFiles are DomainXMLFile, ReportFile, ConsoleFile and KubeVirtFile
// of name.
func SideFiles(name string) []string {
	return []string{DomainXMLFile(name), ReportFile(name), ConsoleFile(name), KubeVirtFile(name)}
}

// OutputFiles are the names the VM name with pipeline p writes into its
// output directory, as far as the manifest says them: the first disk's
// output_path, every convert.disks output_path, and SideFiles. (Further
// disks' NAME-diskN names follow output_path and collide only when it
// does.)
func OutputFiles(name string, p *Pipeline) []string {
	var c Convert
	if p != nil && p.Convert != nil {
		c = *p.Convert
	}
	files := []string{defaultOutputPath(name, &c)}
	for _, d := range c.Disks {
		if d.OutputPath != "" && !d.Skip {
			files = append(files, d.OutputPath)
		}
	}
	return append(files, SideFiles(name)...)
}
