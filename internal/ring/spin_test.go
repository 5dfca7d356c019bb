package ring

import (
	"testing"
	"time"
)

// TestSpinnerLearns: near misses (the answer came soon after a failed
// spin) shorten the spin down to its floor; long waits change nothing;
// spins that succeed, including the periodic full-length probe, lengthen
// it again.
func TestSpinnerLearns(t *testing.T) {
	var s spinner
	tries := func(succeedAt int) (n int, ok bool) {
		ok = s.spin(func(spinning bool) bool {
			if !spinning {
				t.Fatal("spin called attempt as not spinning")
			}
			n++
			return n == succeedAt
		})
		return n, ok
	}
	if n, ok := tries(-1); ok || n != spinTries {
		t.Fatalf("a fresh spinner tried %d times (ok %v), want %d", n, ok, spinTries)
	}
	s.waited(time.Hour)
	if n, _ := tries(-1); n != spinTries {
		t.Fatalf("after a long wait: %d tries, want %d", n, spinTries)
	}
	for range maxCut + 3 {
		tries(-1)
		s.waited(10 * time.Microsecond)
	}
	floor := spinTries >> maxCut
	if n, _ := tries(-1); n != floor && n != spinTries {
		t.Fatalf("after near misses: %d tries, want %d", n, floor)
	}
	// Within probeEvery parks, one spins the full length; if it pays, the
	// next spins are longer.
	full := false
	for range probeEvery {
		if n, _ := tries(-1); n == spinTries {
			full = true
			break
		}
	}
	if !full {
		t.Fatalf("no full-length probe in %d parks", probeEvery)
	}
	for range 2 * maxCut {
		if _, ok := tries(1); !ok {
			t.Fatal("an attempt that succeeds at once failed")
		}
	}
	if n, _ := tries(-1); n != spinTries {
		t.Fatalf("after successful spins: %d tries, want %d", n, spinTries)
	}
}
