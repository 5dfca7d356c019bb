// Package errs defines, once, the errors that users of the library see
// and that its internal packages return: the root package exports them
// (as ErrClosed, ErrFull, ...), so an error from deep inside reaches the
// caller as it is, wrapped with the detail of the case, and no layer
// translates one error into another.
package errs

import "errors"

var (
	// Closed: the queue or pipe was closed.
	Closed = errors.New("mp: closed")
	// Full: a non-blocking put found no room.
	Full = errors.New("mp: full")
	// Empty: a non-blocking get found nothing.
	Empty = errors.New("mp: empty")
	// TooLarge: an item or message longer than the library carries.
	TooLarge = errors.New("mp: too large")
	// Corrupt: shared memory or a message holds what no correct process
	// writes.
	Corrupt = errors.New("mp: corrupt")
	// NoSpace: the tree's shared memory has no room for what was asked.
	NoSpace = errors.New("mp: no room in the shared memory")
	// Unencodable: a value cannot be sent to another process.
	Unencodable = errors.New("mp: value cannot be sent to another process")
)

// MaxMessage is the longest encoded item or message a queue, a pipe or a
// pool task carries, in bytes.
const MaxMessage = 64 << 20
