package mp

import (
	"errors"
	"strings"
	"testing"
)

func TestArenaSizeFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", DefaultArenaSize},
		{"4096", 4096},
		{"64K", 64 << 10},
		{"3m", 3 << 20},
		{"2G", 2 << 30},
		{"1024G", 1 << 40},
	} {
		if got, err := arenaSize(tc.in); err != nil || got != tc.want {
			t.Errorf("arenaSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"99999999999G", "9223372036854775807K", "1025G", "0", "-1G", "G", "1.5G", "lots"} {
		_, err := arenaSize(in)
		if !errors.Is(err, ErrBadArguments) || !strings.Contains(err.Error(), `MULTIPROC_ARENA_SIZE="`+in+`"`) {
			t.Errorf("arenaSize(%q) = %v; want ErrBadArguments quoting the value as written", in, err)
		}
	}
}
