package mp

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/spawn"
	"github.com/multiproc/mp/internal/supervise"
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
	refs *refs.Table
	err  error
}

func treeArena() (*shm.Arena, error) {
	arena.once.Do(func() {
		var err error
		if arena.a != nil {
			// Attached by Init in a child.
			if arena.refs, err = refs.Open(arena.a); err != nil {
				arena.err = fmt.Errorf("mp: shared-memory arena: %w", err)
				return
			}
			sweepOnExit()
			return
		}
		size, err := arenaSize(os.Getenv("MULTIPROC_ARENA_SIZE"))
		if err != nil {
			arena.err = err
			return
		}
		if arena.a, err = shm.New(size); err != nil {
			arena.err = fmt.Errorf("mp: create shared-memory arena: %w", err)
			return
		}
		if arena.refs, err = refs.Create(arena.a); err != nil {
			arena.err = fmt.Errorf("mp: create shared-memory arena: %w", err)
			return
		}
		sweepOnExit()
	})
	return arena.a, arena.err
}

// sweepOnExit lets go of what a child held as soon as it is reaped, before
// anyone waiting for it resumes.
func sweepOnExit() {
	supervise.OnExit(func(int, spawn.Status) { arena.refs.Sweep() })
}

// treeRefs returns the tree's reference tables.
func treeRefs() (*refs.Table, error) {
	if _, err := treeArena(); err != nil {
		return nil, err
	}
	return arena.refs, nil
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
