// Package mp is Python's multiprocessing for Go: it runs functions of the
// program in separate OS processes, with the concepts Python programmers
// know (Process, Pool, Queue, Lock, ...) and Go's conventions (contexts for
// cancellation and deadlines, errors tested with errors.Is, generics).
//
// Use processes rather than goroutines when work may crash, leak, hang or
// must be killed: cgo libraries, untrusted plug-ins, memory-hungry jobs,
// per-task time limits. A process can be killed; a goroutine cannot.
//
// # Starting processes
//
// A child process is the running binary, re-executed. Init, called first in
// main, recognises a child and runs the function its parent asked for
// instead of main; this is Go's `if __name__ == "__main__"`. Functions that
// may run in a child are registered by name, from an init function, so that
// the child, running the same binary, finds the same function:
//
//	func square(x int) error { fmt.Println(x * x); return nil }
//
//	func init() { mp.Register(square) }
//
//	func main() {
//		mp.Init()
//		defer mp.Shutdown()
//		p := mp.NewProcess(square, 7)
//		if err := p.Start(); err != nil {
//			log.Fatal(err)
//		}
//		if err := p.Join(context.Background()); err != nil {
//			log.Fatal(err) // a *ProcessError: the child's error or panic, or its exit status
//		}
//	}
//
// Arguments are encoded (CBOR; []byte and string are copied as they are)
// and decoded in the child by the types of the function's parameters, so
// they must be data: a func, a chan or a closure cannot travel, and an
// attempt is an error at Start, not a mystery in the child. Only the
// exported fields of structs travel.
//
// Thread has the same methods as Process and runs its function in a
// goroutine, sharing memory with its caller, as Python's threading.Thread.
//
// # Pools
//
// A Pool runs functions in worker processes (NewPool) or goroutines
// (NewThreadPool) through generic calls, since methods cannot have type
// parameters: Apply, ApplyAsync, Map, MapAsync, Starmap, StarmapAsync,
// Imap and ImapUnordered. Apply takes a call's arguments one by one, as
// NewProcess and NewThread do; ApplyAsync takes them as one slice, as
// Python's apply_async(func, args) takes a tuple, because its options
// (WithCallback, WithErrorCallback) follow them and Go allows nothing
// after variadic arguments; Starmap and StarmapAsync take one slice per
// call:
//
//	n, err := mp.Apply[int](ctx, pool, add, 2, 3)
//	r := mp.ApplyAsync[int](pool, add, []any{2, 3}, mp.WithCallback(func(n int) { ... }))
//	sums, err := mp.Starmap[int](ctx, pool, add, [][]any{{2, 3}, {4, 5}})
//
// For code the program does not trust, WithIsolatedWorkers makes each
// worker an isolated process (see Process.Isolated) under Limits: it maps
// no shared memory, its tasks and results travel over a socket whose
// frames the parent checks, and a task that breaks the protocol or
// exceeds a limit fails alone (with ErrCorrupt, or a *LimitError), its
// worker replaced:
//
//	pool, err := mp.NewPool(4, mp.WithIsolatedWorkers(mp.Limits{Memory: 512 << 20, CPUTime: 10 * time.Second}))
//
// # Lifetimes
//
// No process started by this package outlives its parent. A child is killed
// when its parent dies, however it dies (a panic, os.Exit, SIGKILL), and its
// own children follow in turn; Terminate and Kill take a child's descendants
// too. Shutdown, deferred in main, is Python's exit-time behaviour: it
// terminates daemonic children and waits for the others.
//
// A signal ends the root at once, and the tree with it, unless the program
// calls NotifyContext: then Ctrl-C or SIGTERM cancels the context of every
// child's function (those that take one), down the tree, pools start no
// more tasks and deliver what finished, children still running after the
// grace period are killed, and Shutdown exits with status 130 or 143. A
// child sent SIGTERM alone (Terminate) stops the same way.
//
// # The memory of primitives
//
// Locks, queues, pipes, dicts and the rest live in one shared-memory arena
// per process tree (MULTIPROC_ARENA_SIZE, DefaultArenaSize by default; it
// is sparse, so only the memory used costs RAM). A primitive's memory lives
// exactly as long as some process of the tree holds it, and then goes back
// to the arena, so a program can make and drop primitives for months:
//
//   - A process holds a primitive from the moment it makes it, or decodes a
//     handle to it (an argument of Process, a struct field, an item from a
//     queue or a pipe), until it closes every handle it has to it, or the
//     garbage collector finds them all unreachable, or the process ends,
//     however it ends (the survivors let go of what a SIGKILLed process
//     held).
//   - A primitive passed to a child with NewProcess is the child's from
//     Start on: the parent may close its own handle at once. A primitive
//     put on a queue or sent on a pipe lives while the item travels, even
//     if the sender lets go of it at once; one left unread in a queue that
//     is dropped goes with the queue. A primitive stored in a Dict or a List
//     is only named there: keep a handle to it while it is used.
//   - Close releases a handle at once; it must be the last call on that
//     handle, and calls after it panic with an error wrapping ErrClosed.
//     Queue.Close and Conn.Close keep their meaning (no more items; this
//     process lets go of the end), and their memory goes back once no
//     handle to them is reachable in any process, so that goroutines still
//     draining a closed queue through the same handle are safe.
//   - A handle of a primitive that is gone decodes as an error wrapping
//     ErrClosed, and one of another process tree (another run of the
//     program, or made-up bytes) as ErrInvalidHandle: never as a handle to
//     whatever reuses its memory.
//
// ReadArenaStats shows what the arena holds, by kind, so that a test or a
// service can watch for leaks; ErrNoSpace says the same.
//
// # Seeing what the tree does
//
// ReadStatus returns a view of the tree from any process of it: processes,
// pools, and every queue, pipe, lock, semaphore, dict and list, read from
// the shared memory they live in (SetName gives them names to show).
// StatusHandler serves it as a live web page, JSON and, with the metrics
// package, Prometheus metrics; the environment variable MULTIPROC_STATUS
// serves it for any program. SetLogger (or MULTIPROC_LOG) logs the tree's
// lifecycle events through log/slog; nothing is logged by default.
//
// # Errors
//
// Errors wrap the sentinel values of this package (ErrNotRegistered,
// ErrBadArguments, ErrUnencodable, ...) for errors.Is, and a failed child is
// a *ProcessError for errors.As, carrying its exit code, its error message
// and, after a panic, its stack; a failed pool task is a *TaskError. Both
// unwrap to what travelled of the child's error: the sentinels given to
// RegisterError that it matched, for errors.Is, and the values of types
// given to RegisterErrorType in its chain, fields intact, for errors.As.
// A child whose function fails also prints it on its stderr, as Python
// prints a child's traceback (Process.QuietErrors turns that off); a pool
// task's failure is only returned.
//
// # Options
//
// Options are named With...: WithInitializer, WithTaskTimeout and the
// other PoolOptions configure a pool; WithChunkSize, WithFailFast,
// WithProgress, WithCallback and WithErrorCallback, the CallOptions,
// configure one call of a pool; WithLock configures a shared value.
package mp
