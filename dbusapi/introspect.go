package dbusapi

import (
	_ "embed"
	"encoding/xml"
	"fmt"

	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"
)

// IntrospectionXML is io.hyper2kvm.Agent1.xml, the contract for the
// Manager and Job interfaces, installed to /usr/share/dbus-1/interfaces/.
//
//go:embed io.hyper2kvm.Agent1.xml
var IntrospectionXML string

// Interfaces returns the Manager and Job interfaces as declared in
// IntrospectionXML.
func Interfaces() (manager, job introspect.Interface, err error) {
	var n introspect.Node
	if err := xml.Unmarshal([]byte(IntrospectionXML), &n); err != nil {
		return manager, job, fmt.Errorf("cannot parse io.hyper2kvm.Agent1.xml: %w", err)
	}
	var okM, okJ bool
	for _, i := range n.Interfaces {
		switch i.Name {
		case ManagerIface:
			manager, okM = i, true
		case JobIface:
			job, okJ = i, true
		}
	}
	if !okM || !okJ {
		return manager, job, fmt.Errorf("cannot find %s and %s in io.hyper2kvm.Agent1.xml", ManagerIface, JobIface)
	}
	return manager, job, nil
}

const (
	ifaceProperties    = "org.freedesktop.DBus.Properties"
	ifaceIntrospect    = "org.freedesktop.DBus.Introspectable"
	ifacePeer          = "org.freedesktop.DBus.Peer"
	ifaceObjectManager = "org.freedesktop.DBus.ObjectManager"
)

var objectManagerData = introspect.Interface{
	Name: ifaceObjectManager,
	Methods: []introspect.Method{{
		Name: "GetManagedObjects",
		Args: []introspect.Arg{{Name: "objects", Type: "a{oa{sa{sv}}}", Direction: "out"}},
	}},
	Signals: []introspect.Signal{
		{Name: "InterfacesAdded", Args: []introspect.Arg{
			{Name: "object", Type: "o"}, {Name: "interfaces", Type: "a{sa{sv}}"}}},
		{Name: "InterfacesRemoved", Args: []introspect.Arg{
			{Name: "object", Type: "o"}, {Name: "interfaces", Type: "as"}}},
	},
}

// introspection renders the Introspect answer for an object with the given
// project interfaces and child node names.
func introspection(ifaces []introspect.Interface, children []string) string {
	n := introspect.Node{Interfaces: append([]introspect.Interface{
		introspect.IntrospectData, introspect.PeerData, prop.IntrospectData,
	}, ifaces...)}
	for _, c := range children {
		n.Children = append(n.Children, introspect.Node{Name: c})
	}
	b, err := xml.MarshalIndent(n, "", "  ")
	if err != nil {
		// The node is built from parsed XML and constants; failing here
		// is a programming error that the unit tests catch.
		return introspect.IntrospectDeclarationString + "<node/>"
	}
	return introspect.IntrospectDeclarationString + string(b) + "\n"
}
