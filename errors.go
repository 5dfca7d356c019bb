package mp

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/errs"
)

// Errors returned by this package. Test for them with errors.Is; the
// returned errors wrap them with the detail of the case at hand.
var (
	// ErrNotRegistered: the function or type was not passed to Register, so
	// a child process could not find it.
	ErrNotRegistered = errors.New("mp: not registered")
	// ErrNotInitialized: Init was not called before starting a process.
	// Without it a child would run the parent's main function again.
	ErrNotInitialized = errors.New("mp: Init was not called at the start of main (or TestMain)")
	// ErrBadArguments: the arguments do not match the function's parameters;
	// also, a value out of its range (a negative count or timeout), whose
	// error says what is wrong with the value.
	ErrBadArguments = errors.New("mp: arguments do not match the function")
	// ErrUnencodable: a value cannot be sent to another process (a func, a
	// chan, an unsafe.Pointer, or a struct holding one).
	ErrUnencodable = errUnencodable()
	// ErrCorrupt: a message read from a queue or a pipe is not a valid
	// encoding of the type asked for (altered or truncated bytes, or a
	// value of another type); the message is consumed. Also: a shared
	// structure (a Dict, a List, the tree's allocator) holds what no
	// correct process writes, as when a faulty process scribbled over it;
	// only calls on that structure fail.
	ErrCorrupt = errCorrupt()
	// ErrAlreadyStarted: Start was called twice.
	ErrAlreadyStarted = errors.New("mp: already started")
	// ErrNotStarted: Join, Terminate or Kill before Start.
	ErrNotStarted = errors.New("mp: not started")
	// ErrDaemonic: a daemonic process tried to start a child process; as in
	// Python, daemonic processes may not have children, because they are
	// terminated without being able to clean up after them.
	ErrDaemonic = errors.New("mp: daemonic processes are not allowed to have children")
	// ErrNotSupported: the operation does not apply, such as terminating a
	// thread whose function takes no context.
	ErrNotSupported = errors.New("mp: not supported")
	// ErrNoSpace: the tree's shared-memory arena has no room for a new
	// primitive, item or value (see DefaultArenaSize). Nothing was changed.
	ErrNoSpace = errNoSpace()
	// ErrOutOfRange: an index outside a List.
	ErrOutOfRange = errors.New("mp: index out of range")
)

// valueError is a value out of its range: its message says what is wrong
// with the value, rather than ErrBadArguments's, which it matches.
type valueError struct{ msg string }

func (e *valueError) Error() string { return e.msg }
func (e *valueError) Unwrap() error { return ErrBadArguments }

func badValue(format string, args ...any) error {
	return &valueError{msg: "mp: " + fmt.Sprintf(format, args...)}
}

// ProcessError reports that a process or thread did not finish cleanly: its
// function returned an error or panicked, it exited with a non-zero status,
// or a signal ended it.
type ProcessError struct {
	Name string // the process's or thread's Name
	Pid  int    // its process id

	// ExitCode is the exit status, or the negated signal number if a
	// signal ended the process (-9 for SIGKILL), as in Python.
	ExitCode int

	// Message is the text of the error the function returned, or the value
	// it panicked with; empty if the process ended without reporting (a
	// signal, or os.Exit).
	Message string
	// Panicked reports whether the function panicked; Stack is then the
	// panicking goroutine's stack as printed in the child.
	Panicked bool
	Stack    string

	errs []error
}

// Unwrap returns what the parent rebuilt of the function's error: the
// values of error types given to RegisterErrorType in its chain, fields
// intact, then the sentinel errors given to RegisterError that it matched
// (see TaskError); for a Thread, the error itself. It is empty for a
// panic, an exit without a report, and an isolated child, whose error
// travels as its message only.
func (e *ProcessError) Unwrap() []error { return e.errs }

// Error describes the failure in one line: the child's message, or how it
// exited.
func (e *ProcessError) Error() string {
	who := fmt.Sprintf("mp: %s (pid %d)", strconv.Quote(e.Name), e.Pid)
	switch {
	case e.Panicked:
		return who + " panicked: " + e.Message
	case e.Message != "":
		return who + " failed: " + e.Message
	case e.ExitCode < 0:
		return who + " was killed by " + unix.SignalName(syscall.Signal(-e.ExitCode))
	default:
		return who + " exited with status " + strconv.Itoa(e.ExitCode)
	}
}

// BufferTooShortError is the error of Conn.RecvBytesInto for a message
// longer than the buffer (Python's BufferTooShort); the message was not
// taken. Match it with errors.As; it also matches io.ErrShortBuffer with
// errors.Is.
type BufferTooShortError struct {
	Needed int // the message's length: the buffer size it takes
}

func (e *BufferTooShortError) Error() string {
	return fmt.Sprintf("mp: the message is %d bytes, longer than the buffer", e.Needed)
}

// Unwrap returns io.ErrShortBuffer.
func (e *BufferTooShortError) Unwrap() error { return io.ErrShortBuffer }

// The errors that internal packages return as well are defined once, in
// internal/errs, so that they reach callers as they are; these functions
// keep that package's name out of the documentation, as io/fs does.
func errClosed() error      { return errs.Closed }
func errFull() error        { return errs.Full }
func errEmpty() error       { return errs.Empty }
func errTooLarge() error    { return errs.TooLarge }
func errCorrupt() error     { return errs.Corrupt }
func errNoSpace() error     { return errs.NoSpace }
func errUnencodable() error { return errs.Unencodable }
