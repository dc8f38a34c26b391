package agent

import (
	"strconv"
	"strings"
)

// freeNameLocked is name, or name-2, name-3, ...: the first that no job
// the agent keeps is called, so that four images all named blank.vmdk,
// dropped one after another, become four jobs a user can tell apart (and
// name to hyperctl show). Only images are renamed: a manifest's name is
// the user's own word.
func (a *Agent) freeNameLocked(name string) string {
	taken := map[string]bool{}
	for _, r := range a.st.Jobs {
		if r.Name == name || strings.HasPrefix(r.Name, name+"-") {
			taken[r.Name] = true
		}
	}
	if !taken[name] {
		return name
	}
	for n := 2; ; n++ {
		suffix := "-" + strconv.Itoa(n)
		// Names are at most 64 characters (nameFromFile).
		c := name[:min(len(name), 64-len(suffix))] + suffix
		if !taken[c] {
			return c
		}
	}
}
