package ring

import (
	"runtime"
	"sync/atomic"
	"time"
)

// A blocked Put or Get spins (tries again with runtime.Gosched in between)
// before it sleeps on the futex word: when the other side is running on
// another core, its message comes within a microsecond or two, far sooner
// than a sleep and a wake-up. When it is not running (the machine has more
// runnable threads than cores), spinning only burns the core it needs, and
// the exchange gets several times slower than sleeping at once. A spinner
// learns which case it is in from how its waits end, per ring and
// direction in each process:
//   - a spin that succeeds allows a longer one next time;
//   - a spin that fails and is followed by a wait that ends soon (within
//     nearMiss) means the other side answered but not while this one
//     spun: the next spin is halved, down to spinTries>>maxCut tries;
//   - a longer wait says nothing about spinning (the other side had
//     nothing to send) and changes nothing.
//
// So that a spinner that learnt to sleep finds out when spinning pays
// again, one park in probeEvery spins the full spinTries.
const (
	spinTries  = 200
	maxCut     = 6 // 3 tries
	nearMiss   = time.Millisecond
	probeEvery = 64
)

type spinner struct {
	cut   atomic.Int32
	parks atomic.Uint32
}

// spin tries attempt(true) up to the current budget of times, reporting
// whether it succeeded.
func (s *spinner) spin(attempt func(spinning bool) bool) bool {
	cut := s.cut.Load()
	n := spinTries >> cut
	if cut > 0 && s.parks.Add(1)%probeEvery == 0 {
		n = spinTries
	}
	for range n {
		runtime.Gosched()
		if attempt(true) {
			if cut > 0 {
				s.cut.CompareAndSwap(cut, cut-1)
			}
			return true
		}
	}
	return false
}

// waited records that a caller whose spin failed then waited d for its
// attempt to succeed.
func (s *spinner) waited(d time.Duration) {
	if d >= nearMiss {
		return
	}
	if cut := s.cut.Load(); cut < maxCut {
		s.cut.CompareAndSwap(cut, cut+1)
	}
}
