package ring

import "sync/atomic"

// Counters are a ring's running totals, read without locking: each figure
// is exact at some moment of the call, not all at the same one.
type Counters struct {
	Puts        uint64 // cells claimed by producers, since the ring was made
	Gets        uint64 // cells claimed by consumers
	GetWaiters  int    // processes' goroutines parked in a Get
	PutWaiters  int    // processes' goroutines parked in a Put
	SegmentCaps int    // capacity of the segments made so far, in messages
}

// Counters returns the ring's totals. It reads the cursors the ring keeps
// anyway, so it costs the puts and gets nothing.
func (r *Ring) Counters() Counters {
	var c Counters
	r.segments(func(s *seg) {
		c.Puts += atomic.LoadUint64(s.tail)
		c.Gets += atomic.LoadUint64(s.head)
		c.GetWaiters += int(atomic.LoadUint32(s.getWaiter))
		c.PutWaiters += int(atomic.LoadUint32(s.putWaiter))
		c.SegmentCaps += int(s.capacity)
	})
	return c
}
