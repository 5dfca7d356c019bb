package proc

import (
	"os"
	"os/exec"
	"testing"
)

func TestSelfAlive(t *testing.T) {
	me := Self()
	if me.Pid != os.Getpid() || me.Start == 0 {
		t.Fatalf("Self() = %+v", me)
	}
	if !Alive(me) {
		t.Fatal("this process is not alive")
	}
	if Alive(ID{Pid: me.Pid, Start: me.Start + 1}) {
		t.Fatal("a different start time must mean a different (dead) process")
	}
	if Alive(ID{}) {
		t.Fatal("pid 0 is alive")
	}
}

func TestZombieAndReaped(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id := ID{Pid: cmd.Process.Pid}
	// Until Wait, the exited child is a zombie: dead all the same. Poll
	// until it has exited.
	for Alive(id) {
	}
	cmd.Wait()
	if Alive(id) {
		t.Fatal("reaped process is alive")
	}
}

func TestParentAndPossible(t *testing.T) {
	if ppid, ok := Parent(os.Getpid()); !ok || ppid != os.Getppid() {
		t.Fatalf("Parent = %d, %v, want %d", ppid, ok, os.Getppid())
	}
	if _, ok := Parent(1<<22 + 1); ok {
		t.Fatal("a pid beyond pid_max has a parent")
	}
	for pid, want := range map[int]bool{0: false, -1: false, 1: true, os.Getpid(): true, 1<<22 + 1: false} {
		if got := Possible(pid); got != want {
			t.Errorf("Possible(%d) = %v", pid, got)
		}
	}
}
