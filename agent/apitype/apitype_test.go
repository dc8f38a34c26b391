package apitype

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

func TestPageSlice(t *testing.T) {
	var list []jobs.Job // oldest first
	for i := range 5 {
		list = append(list, jobs.Job{ID: fmt.Sprint("j", i)})
	}
	for _, tt := range []struct {
		name string
		p    Page
		want string
	}{
		{"all, newest first", Page{}, "j4 j3 j2 j1 j0"},
		{"first page", Page{Limit: 2}, "j4 j3"},
		{"second page", Page{Offset: 2, Limit: 2}, "j2 j1"},
		{"short last page", Page{Offset: 4, Limit: 2}, "j0"},
		{"past the end", Page{Offset: 9, Limit: 2}, ""},
		{"negative offset is 0", Page{Offset: -3, Limit: 1}, "j4"},
		{"oldest first", Page{Offset: 1, Limit: 2, OldestFirst: true}, "j1 j2"},
	} {
		got, n := tt.p.Slice(list)
		var ids []string
		for _, j := range got {
			ids = append(ids, j.ID)
		}
		if strings.Join(ids, " ") != tt.want || n != len(list) {
			t.Errorf("%s: %v, %d; want %q, %d", tt.name, ids, n, tt.want, len(list))
		}
	}
}
