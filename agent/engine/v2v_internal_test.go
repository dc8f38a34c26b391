package engine

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/report"
	"github.com/hyper2kvm/hyper2kvm/agent/v2v"
)

func TestMatchStaticIPs(t *testing.T) {
	one := report.WindowsNIC{ID: "{a}", Addresses: []string{"10.0.0.5"}, Prefix: []int{24}, Gateways: []string{"10.0.0.1"}, DNS: []string{"10.0.0.53"}}
	two := report.WindowsNIC{ID: "{b}", Addresses: []string{"10.0.1.5", "10.0.1.6"}, Prefix: []int{16, 16}}
	tests := []struct {
		name string
		nics []report.WindowsNIC
		macs []string
		want []v2v.StaticIP
		note string
	}{
		{"none", nil, []string{"00:50:56:00:00:01"}, nil, ""},
		{"one and one", []report.WindowsNIC{one}, []string{"00:50:56:00:00:01"},
			[]v2v.StaticIP{{MAC: "00:50:56:00:00:01", Address: "10.0.0.5", Gateway: "10.0.0.1", Prefix: 24, DNS: []string{"10.0.0.53"}}}, ""},
		{"two addresses", []report.WindowsNIC{two}, []string{"00:50:56:00:00:01"},
			[]v2v.StaticIP{{MAC: "00:50:56:00:00:01", Address: "10.0.1.5", Prefix: 16}}, "add 10.0.1.6 again"},
		{"no MAC", []report.WindowsNIC{one}, nil, nil, "cannot be matched"},
		{"two NICs", []report.WindowsNIC{one, two}, []string{"00:50:56:00:00:01", "00:50:56:00:00:02"}, nil, "cannot be matched"},
	}
	for _, tt := range tests {
		got, note := matchStaticIPs(tt.nics, tt.macs)
		if !reflect.DeepEqual(got, tt.want) || (tt.note == "") != (note == "") || !strings.Contains(note, tt.note) {
			t.Errorf("%s: %+v %q, want %+v %q", tt.name, got, note, tt.want, tt.note)
		}
	}
}
