package mp_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// statusOf finds the primitive labelled name in st.
func queueNamed(t *testing.T, st mp.Status, name string) mp.QueueStatus {
	t.Helper()
	for _, q := range st.Queues {
		if q.Name == name {
			return q
		}
	}
	t.Fatalf("no queue named %q in %+v", name, st.Queues)
	return mp.QueueStatus{}
}

func readStatus(t *testing.T) mp.Status {
	t.Helper()
	st, err := mp.ReadStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// reportQueue, in a child, reads the status and reports what it sees of
// the queue named name.
func reportQueue(name string, out *mp.Queue[string]) error {
	st, err := mp.ReadStatus()
	if err != nil {
		return err
	}
	for _, q := range st.Queues {
		if q.Name == name {
			return out.Put(context.Background(), fmt.Sprintf("len=%d cap=%d puts=%d gets=%d holders=%d", q.Len, q.Cap, q.Puts, q.Gets, q.Holders))
		}
	}
	return out.Put(context.Background(), "not found")
}

func init() { mp.Register(reportQueue) }

func TestStatusQueue(t *testing.T) {
	ctx := within(t)
	q := mp.Must(mp.NewQueue[int](10))
	defer q.Close()
	if err := q.SetName("orders-status"); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := q.Put(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := q.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := queueNamed(t, readStatus(t), "orders-status")
	if s.Kind != "Queue" || s.Len != 4 || s.Cap != 10 || s.Puts != 7 || s.Gets != 3 || s.Holders != 1 || s.Closed {
		t.Fatalf("status %+v, want a Queue of 4 items of 10, 7 puts, 3 gets, 1 holder", s)
	}
	// The same figures from a child, which holds the queue too (and the
	// queue it reports on).
	out := mp.Must(mp.NewQueue[string](1))
	defer out.Close()
	p := mp.NewProcess(reportQueue, "orders-status", out)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	got, err := out.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	// The child was not given the queue: it holds it only while it reads
	// it, after counting its holders.
	if want := "len=4 cap=10 puts=7 gets=3 holders=1"; got != want {
		t.Fatalf("the child saw %q, want %q", got, want)
	}
}

// TestStatusGrowingQueue: the figures of an unbounded queue add up over the
// segments its ring grew into.
func TestStatusGrowingQueue(t *testing.T) {
	ctx := within(t)
	q := mp.Must(mp.NewQueue[int](0))
	defer q.Close()
	q.SetName("status-growing")
	for i := range 100 {
		if err := q.Put(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	for range 30 {
		if _, err := q.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := queueNamed(t, readStatus(t), "status-growing")
	if s.Len != 70 || s.Cap != 0 || s.Puts != 100 || s.Gets != 30 || s.BlockedGets != 0 || s.BlockedPuts != 0 {
		t.Fatalf("status %+v, want 70 queued of 100 put, unbounded", s)
	}
}

func TestStatusNames(t *testing.T) {
	l := mp.Must(mp.NewLock())
	defer l.Close()
	if err := l.SetName("a-name-that-is-far-too-long-to-be-kept-in-the-shared-slot"); err == nil {
		t.Fatal("SetName took a name longer than MaxName")
	}
	if err := l.SetName("first"); err != nil {
		t.Fatal(err)
	}
	if err := l.SetName("second"); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, s := range readStatus(t).Locks {
		if s.Name == "first" {
			t.Fatal("the old name is still shown")
		}
		if s.Name == "second" {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("%d locks named second, want 1", found)
	}
	l.Close()
	for _, s := range readStatus(t).Locks {
		if s.Name == "second" {
			t.Fatal("a closed lock is still shown")
		}
	}
	// A new primitive that reuses the entry does not inherit the name.
	for range 4 {
		l2 := mp.Must(mp.NewLock())
		for _, s := range readStatus(t).Locks {
			if s.Name == "second" {
				t.Fatal("a new lock took the old one's name")
			}
		}
		l2.Close()
	}
}

func TestStatusLockHolderAndRecovery(t *testing.T) {
	dir := t.TempDir()
	l := mp.Must(mp.NewLock())
	defer l.Close()
	l.SetName("status-lock")
	holder := startHolder(t, dir, holdLock, l)
	lockNamed := func() mp.LockStatus {
		st := readStatus(t)
		for _, s := range st.Locks {
			if s.Name == "status-lock" {
				return s
			}
		}
		t.Fatal("lock not found")
		return mp.LockStatus{}
	}
	s := lockNamed()
	if !s.Held || s.HolderPid != holder.Pid() || s.HolderName != holder.Name || s.Recovered != 0 || s.Holders != 2 {
		t.Fatalf("status %+v, want held by %s (pid %d), held by 2 processes", s, holder.Name, holder.Pid())
	}
	holder.Kill()
	join(t, holder)
	if err := l.Acquire(within(t)); err != mp.ErrOwnerDied {
		t.Fatalf("Acquire = %v, want ErrOwnerDied", err)
	}
	s = lockNamed()
	if !s.Held || s.HolderPid != os.Getpid() || s.HolderName != "MainProcess" || s.Recovered != 1 || s.Holders != 1 {
		t.Fatalf("status %+v, want held by MainProcess, recovered once", s)
	}
	l.Release()
	if s = lockNamed(); s.Held || s.Recovered != 1 {
		t.Fatalf("status %+v after Release", s)
	}
}

func TestStatusSemaphoreAndCollections(t *testing.T) {
	ctx := within(t)
	s := mp.Must(mp.NewBoundedSemaphore(3))
	defer s.Close()
	s.SetName("status-sem")
	for range 2 {
		if err := s.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	d := mp.Must(mp.NewDict[string, int]())
	defer d.Close()
	d.SetName("status-dict")
	for i := range 5 {
		d.Set(fmt.Sprint(i), i)
	}
	ls := mp.Must(mp.NewList[int]())
	defer ls.Close()
	ls.SetName("status-list")
	ls.Append(1)
	ls.Append(2)
	st := readStatus(t)
	var sem *mp.SemaphoreStatus
	for i := range st.Semaphores {
		if st.Semaphores[i].Name == "status-sem" {
			sem = &st.Semaphores[i]
		}
	}
	if sem == nil || sem.Value != 1 || sem.Bound != 3 || sem.HeldBy[os.Getpid()] != 2 || len(sem.HeldBy) != 1 {
		t.Fatalf("semaphore %+v, want 1 free of 3, 2 held by this process", sem)
	}
	lens := map[string]int{}
	for _, c := range st.Collections {
		lens[c.Name] = c.Len
	}
	if lens["status-dict"] != 5 || lens["status-list"] != 2 {
		t.Fatalf("collections %v, want a dict of 5 and a list of 2", lens)
	}
	s.Release()
	s.Release()
}

func TestStatusProcesses(t *testing.T) {
	dir := t.TempDir()
	l := mp.Must(mp.NewLock())
	defer l.Close()
	holder := startHolder(t, dir, holdLock, l)
	st := readStatus(t)
	if len(st.Processes) < 2 || st.Processes[0].Pid != os.Getpid() || st.Processes[0].Name != "MainProcess" {
		t.Fatalf("processes %+v: want this one first", st.Processes)
	}
	var child *mp.ProcessStatus
	for i := range st.Processes {
		if st.Processes[i].Pid == holder.Pid() {
			child = &st.Processes[i]
		}
	}
	if child == nil || child.Name != holder.Name || child.Parent != os.Getpid() || child.State == "" ||
		child.RSS <= 0 || child.Started.IsZero() || child.Started.After(time.Now()) {
		t.Fatalf("child %+v, want %s, child of %d, with its state, memory and start", child, holder.Name, os.Getpid())
	}
	holder.Kill()
	join(t, holder)
	st = readStatus(t)
	for _, p := range st.Processes {
		if p.Pid == holder.Pid() {
			t.Fatalf("a reaped child is listed as live: %+v", p)
		}
	}
	if len(st.Ended) == 0 {
		t.Fatal("no ended process")
	}
	e := st.Ended[len(st.Ended)-1]
	if e.Pid != holder.Pid() || e.Name != holder.Name || e.ExitCode != -9 || e.Exit != "killed by SIGKILL (Kill)" || e.State != "exited" {
		t.Fatalf("ended %+v", e)
	}
}

// TestStatusBlockedGet: a Get parked on an empty queue shows as blocked,
// and no longer once it has its item.
func TestStatusBlockedGet(t *testing.T) {
	ctx := within(t)
	q := mp.Must(mp.NewQueue[int](4))
	defer q.Close()
	q.SetName("status-blocked")
	got := make(chan error, 1)
	go func() {
		_, err := q.Get(ctx)
		got <- err
	}()
	deadline := time.Now().Add(time.Minute)
	for queueNamed(t, readStatus(t), "status-blocked").BlockedGets != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the blocked Get never showed")
		}
		time.Sleep(time.Millisecond)
	}
	if err := q.Put(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if s := queueNamed(t, readStatus(t), "status-blocked"); s.BlockedGets != 0 || s.Gets != 1 || s.Len != 0 {
		t.Fatalf("after the Get: %+v", s)
	}
}

// startGrandchild, in a child, starts a grandchild named name that holds
// lock, and waits for it.
func startGrandchild(lock *mp.Lock, flag, name string) error {
	p := mp.NewProcess(holdLock, lock, flag)
	p.Name = name
	if err := p.Start(); err != nil {
		return err
	}
	return p.Join(context.Background())
}

func init() { mp.Register(startGrandchild) }

// TestStatusGrandchild: a process below a child shows with its name and
// parent.
func TestStatusGrandchild(t *testing.T) {
	l := mp.Must(mp.NewLock())
	defer l.Close()
	flag := filepath.Join(t.TempDir(), "held")
	p := mp.NewProcess(startGrandchild, l, flag, "Grand-Child")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.Kill()
		join(t, p)
	}()
	awaitFile(t, flag)
	var found bool
	for _, s := range readStatus(t).Processes {
		if s.Name == "Grand-Child" {
			found = s.Parent == p.Pid()
		}
	}
	if !found {
		t.Fatalf("no Grand-Child below %d in %+v", p.Pid(), readStatus(t).Processes)
	}
}
