// Threads shows the seeds' thread material with mp.Thread, which has the
// same methods as mp.Process: the two ways to create a thread (a function,
// or a type with a Run method), IsAlive, CurrentThread (Python's
// current_thread()), and a mutex over shared data, which
// threads (unlike processes) really share.
package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/multiproc/mp"
)

// task runs until release is closed: threads share memory, so a channel
// can simply be passed to them. It finds its own name as the seed's does,
// with current_thread().
func task(release chan struct{}) {
	fmt.Printf("%s: thread start\n", mp.CurrentThread().Name)
	<-release
	fmt.Printf("%s: thread end\n", mp.CurrentThread().Name)
}

// myThread is the "subclass Thread and override run" way.
type myThread struct{ Name string }

func (t myThread) Run() {
	fmt.Printf("%s: thread start (Run)\n", t.Name)
	fmt.Printf("%s: thread end (Run)\n", t.Name)
}

// n is shared by all threads of the process, so it needs a mutex.
var (
	n  = 100
	mu sync.Mutex
)

func decrement(hold time.Duration) {
	mu.Lock()
	defer mu.Unlock()
	tmp := n
	time.Sleep(hold) // the seeds' window in which an unlocked update is lost
	n = tmp - 1
}

func main() {
	mp.Init()
	hold := flag.Duration("hold", time.Millisecond, "time each thread holds the mutex")
	flag.Parse()
	ctx := context.Background()

	release := make(chan struct{})
	t := mp.NewThread(task, release)
	fmt.Printf("%s alive before Start: %v\n", t.Name, t.IsAlive())
	t.Start()
	fmt.Printf("%s alive after Start: %v\n", t.Name, t.IsAlive())
	close(release)
	t.Join(ctx)
	fmt.Printf("%s alive after Join: %v\n", t.Name, t.IsAlive())

	r := mp.NewThread(myThread{Name: "second"})
	r.Start()
	r.Join(ctx)

	threads := make([]*mp.Thread, 100)
	for i := range threads {
		threads[i] = mp.NewThread(decrement, *hold)
		threads[i].Start()
	}
	for _, t := range threads {
		t.Join(ctx)
	}
	fmt.Printf("n after 100 locked decrements: %d\n", n)
}
