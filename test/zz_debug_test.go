package test

import (
	"os/exec"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

func TestZZDebugWin(t *testing.T) {
	dir := "/tmp/zzwin2"
	exec.Command("rm", "-rf", dir).Run()
	exec.Command("mkdir", dir).Run()
	fixture.WindowsDisk(t, dir, fixture.WindowsOptions{Registry: winServer()})
}
