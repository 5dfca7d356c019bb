package mp_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

func init() { mp.Register(titledChild) }

// titledChild checks that its os.Args is the parent's program name alone,
// says it is ready, and waits to be released.
func titledChild(ready, release *mp.Event, wantArgs []string) error {
	if !slices.Equal(os.Args, wantArgs) {
		return fmt.Errorf("os.Args in the child = %q, want %q", os.Args, wantArgs)
	}
	ready.Set()
	return release.Wait(context.Background())
}

func procFile(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestChildTitles: ps and top show a child as "<program> <name>" (its
// command line) and by the program's comm, not as "exe"; the child's
// os.Args is still the program's name alone.
func TestChildTitles(t *testing.T) {
	ready, err := mp.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	release, err := mp.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	p := mp.NewProcess(titledChild, ready, release, []string{os.Args[0]})
	p.Name = "Ticket-Seller-7"
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		release.Set()
		if err := join(t, p); err != nil {
			t.Fatal(err)
		}
	}()
	if err := ready.Wait(within(t)); err != nil {
		t.Fatal(err)
	}
	comm := strings.TrimSuffix(procFile(t, os.Getpid(), "comm"), "\n")
	if got := strings.TrimSuffix(procFile(t, p.Pid(), "comm"), "\n"); got != comm || got == "exe" {
		t.Errorf("child's comm = %q, want the parent's %q", got, comm)
	}
	if got, want := procFile(t, p.Pid(), "cmdline"), os.Args[0]+" Ticket-Seller-7\x00"; got != want {
		t.Errorf("child's cmdline = %q, want %q", got, want)
	}

	pool := newPool(t, 1)
	wpid, err := mp.Apply[int](within(t), pool, pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := procFile(t, wpid, "cmdline"); !strings.HasPrefix(got, os.Args[0]+" PoolWorker-") {
		t.Errorf("pool worker's cmdline = %q, want %q and its name", got, os.Args[0])
	}
	if got := strings.TrimSuffix(procFile(t, wpid, "comm"), "\n"); got != comm {
		t.Errorf("pool worker's comm = %q, want %q", got, comm)
	}
	closeAndJoin(t, pool)
}
