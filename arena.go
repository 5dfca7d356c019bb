package mp

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/multiproc/mp/internal/shm"
)

// DefaultArenaSize is the size of the shared-memory arena of a process tree,
// unless the environment variable MULTIPROC_ARENA_SIZE says otherwise (bytes,
// or with a K, M or G suffix). The arena is a sparse memfd: only the memory
// that primitives use is ever allocated.
const DefaultArenaSize = 1 << 30

// arena is the tree's shared memory. The root creates it on first use; a
// child attaches to the one it inherited, in Init.
var arena struct {
	once sync.Once
	a    *shm.Arena
	err  error
}

func treeArena() (*shm.Arena, error) {
	arena.once.Do(func() {
		if arena.a != nil {
			return // attached by Init in a child
		}
		size, err := arenaSize(os.Getenv("MULTIPROC_ARENA_SIZE"))
		if err != nil {
			arena.err = err
			return
		}
		if arena.a, err = shm.New(size); err != nil {
			arena.err = fmt.Errorf("mp: create shared-memory arena: %w", err)
		}
	})
	return arena.a, arena.err
}

func arenaSize(value string) (int, error) {
	if value == "" {
		return DefaultArenaSize, nil
	}
	s, mult := value, 1
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: MULTIPROC_ARENA_SIZE=%q is not a size (bytes, or a number with K, M or G)", ErrBadArguments, value)
	}
	if n > shm.MaxSize/mult {
		return 0, fmt.Errorf("%w: MULTIPROC_ARENA_SIZE=%q is over the largest arena, %d bytes", ErrBadArguments, value, shm.MaxSize)
	}
	return n * mult, nil
}
