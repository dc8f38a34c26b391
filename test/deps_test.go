package test

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDepsTiers: every package of packaging/deps.txt names a tier, and what
// the product needs at run time is what the .deb depends on, so `make demo`
// on a fresh machine installs no more than the package would and nothing
// less.
func TestDepsTiers(t *testing.T) {
	f, err := os.Open("../packaging/deps.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deb, err := os.ReadFile("../packaging/deb.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^depends="([^"]*)"`).FindSubmatch(deb)
	if m == nil {
		t.Fatal("packaging/deb.sh has no depends= line")
	}
	depends := map[string]bool{}
	for _, alt := range regexp.MustCompile(`[,|]`).Split(string(m[1]), -1) {
		if fs := strings.Fields(alt); len(fs) > 0 {
			depends[fs[0]] = true
		}
	}
	// Essential packages every Debian system has; a Depends on them is
	// not allowed by policy.
	essential := map[string]bool{"util-linux": true}
	tiers := map[string]int{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 3 || fs[2] != "#" {
			t.Errorf("deps.txt:%d: want \"package tier # why\", got %q", n, line)
			continue
		}
		pkg, tier := fs[0], fs[1]
		switch tier {
		case "run":
			if !depends[pkg] && !essential[pkg] {
				t.Errorf("deps.txt:%d: %s is needed at run time but the .deb does not depend on it (packaging/deb.sh)", n, pkg)
			}
		case "demo", "test":
		default:
			t.Errorf("deps.txt:%d: %s has tier %q, want run, demo or test", n, pkg, tier)
		}
		tiers[tier]++
	}
	if tiers["run"] == 0 || tiers["demo"] == 0 || tiers["test"] == 0 {
		t.Errorf("tiers %v: each of run, demo, test must list something", tiers)
	}
}
