// KTV is the seeds' Semaphore example: a KTV room holds at most four
// people, ten want in. Each person is a process that takes one of the
// semaphore's four permits to enter, sings for a while, and gives it back
// on leaving; the others wait at the door.
//
// To show that the limit holds, and not merely that it looks as if it
// does, everyone keeps a head count: on entering and on leaving, while
// holding the permit, a person updates a count shared by all processes (a
// small file, updated under a separate mp.Lock) and prints the line and
// the count it saw in the same critical section. The lines therefore come
// out in the order of the updates, and the count on each line is exact.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/multiproc/mp"
)

const (
	people = 10
	seats  = 4
)

// ktv is one person's visit.
func ktv(room *mp.Semaphore, door *mp.Lock, countFile string, minStay, maxStay time.Duration) error {
	ctx := context.Background()
	me := mp.CurrentProcess().Name
	if err := room.Acquire(ctx); err != nil { // wait for a free seat
		return err
	}
	defer room.Release()

	if err := headCount(ctx, door, countFile, +1, me+" enters the KTV room"); err != nil {
		return err
	}
	time.Sleep(minStay + rand.N(maxStay-minStay+1)) // sing
	return headCount(ctx, door, countFile, -1, me+" leaves the KTV room")
}

// headCount adds d to the number of people inside, records the highest
// number seen, and prints msg with the new number, all under door.
func headCount(ctx context.Context, door *mp.Lock, countFile string, d int, msg string) error {
	if err := door.Acquire(ctx); err != nil {
		if errors.Is(err, mp.ErrOwnerDied) {
			// A person died while updating the count: it cannot be trusted.
			door.Release()
		}
		return err
	}
	defer door.Release()
	inside, most, err := readCount(countFile)
	if err != nil {
		return err
	}
	inside += d
	most = max(most, inside)
	if err := os.WriteFile(countFile, []byte(fmt.Sprintf("%d %d", inside, most)), 0o644); err != nil {
		return err
	}
	fmt.Printf("%s (inside: %d)\n", msg, inside)
	return nil
}

// readCount reads "inside most" from the count file.
func readCount(path string) (inside, most int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: malformed count %q", path, b)
	}
	if inside, err = strconv.Atoi(f[0]); err == nil {
		most, err = strconv.Atoi(f[1])
	}
	return inside, most, err
}

func init() { mp.Register(ktv) }

func main() {
	mp.Init()
	defer mp.Shutdown()
	// The seed sings for 3 to 8 seconds; the default is a hundred times
	// shorter.
	minStay := flag.Duration("min", 30*time.Millisecond, "shortest stay in the room")
	maxStay := flag.Duration("max", 80*time.Millisecond, "longest stay in the room")
	flag.Parse()
	if *maxStay < *minStay {
		*maxStay = *minStay
	}

	dir, err := os.MkdirTemp("", "ktv")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	countFile := filepath.Join(dir, "count")
	if err := os.WriteFile(countFile, []byte("0 0"), 0o644); err != nil {
		panic(err)
	}

	room := mp.Must(mp.NewSemaphore(seats)) // at most four inside at once
	door := mp.Must(mp.NewLock())           // guards the head count

	var ps []*mp.Process
	for i := range people {
		p := mp.NewProcess(ktv, room, door, countFile, *minStay, *maxStay)
		p.Name = fmt.Sprintf("person%d", i)
		if err := p.Start(); err != nil {
			panic(err)
		}
		ps = append(ps, p)
	}
	failed := false
	for _, p := range ps {
		if err := p.Join(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p.Name, err)
			failed = true
		}
	}
	inside, most, err := readCount(countFile)
	if err != nil {
		panic(err)
	}
	fmt.Printf("max inside at once: %d (limit %d)\n", most, seats)
	fmt.Printf("inside at the end: %d\n", inside)
	if failed {
		mp.Shutdown()
		os.Exit(1)
	}
}
