package mp_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

// quotaError has a pointer receiver, codeError a value receiver;
// plainError is never registered.
type quotaError struct {
	User string
	Left int
}

func (e *quotaError) Error() string { return fmt.Sprintf("%s has %d left", e.User, e.Left) }

type codeError struct{ Code int }

func (e codeError) Error() string { return fmt.Sprintf("code %d", e.Code) }

type plainError struct{ X int }

func (e *plainError) Error() string { return fmt.Sprintf("plain %d", e.X) }

var errQuotaSentinel = errors.New("quota sentinel")

func init() {
	mp.RegisterErrorType[*quotaError]()
	mp.RegisterErrorType[codeError]()
	mp.RegisterError(errQuotaSentinel)
	mp.Register(typedFail, typedFailProcess)
}

// typedFail fails in a way chosen by kind.
func typedFail(kind int) (int, error) {
	switch kind {
	case 0:
		return 0, fmt.Errorf("checking ann: %w", &quotaError{User: "ann", Left: 3})
	case 1:
		return 0, codeError{Code: 7}
	case 2:
		return 0, &codeError{Code: 8} // the pointer of a value-receiver type
	case 3:
		return 0, &plainError{X: 1}
	case 4:
		return 0, fmt.Errorf("both: %w", errors.Join(codeError{Code: 9}, fmt.Errorf("%w: %w", errQuotaSentinel, &quotaError{User: "bob", Left: 1})))
	}
	return kind, nil
}

func typedFailProcess(kind int) error {
	_, err := typedFail(kind)
	return err
}

// checkTyped checks that err, from typedFail(kind) run elsewhere, has kept
// its message and, for registered types, its type and fields.
func checkTyped(t *testing.T, kind int, err error) {
	t.Helper()
	_, orig := typedFail(kind)
	if err == nil || !strings.Contains(err.Error(), orig.Error()) {
		t.Fatalf("kind %d: %v, want the message %q", kind, err, orig)
	}
	var qe *quotaError
	var ce codeError
	var cp *codeError
	var pe *plainError
	switch kind {
	case 0:
		if !errors.As(err, &qe) || *qe != (quotaError{User: "ann", Left: 3}) {
			t.Fatalf("kind 0: errors.As *quotaError = %v (%+v) in %v", qe != nil, qe, err)
		}
	case 1:
		if !errors.As(err, &ce) || ce.Code != 7 {
			t.Fatalf("kind 1: errors.As codeError = %+v in %v", ce, err)
		}
	case 2:
		if !errors.As(err, &cp) || cp.Code != 8 {
			t.Fatalf("kind 2: errors.As *codeError = %+v in %v", cp, err)
		}
	case 3:
		if errors.As(err, &pe) {
			t.Fatalf("kind 3: an unregistered type arrived as itself: %+v", pe)
		}
	case 4:
		if !errors.As(err, &ce) || ce.Code != 9 || !errors.As(err, &qe) || qe.User != "bob" || !errors.Is(err, errQuotaSentinel) {
			t.Fatalf("kind 4: joined chain lost: codeError %+v, quotaError %+v, in %v", ce, qe, err)
		}
	}
}

// TestRegisterErrorTypeAcrossPool: a task's error of a registered type
// (wrapped or not, pointer or value receiver, in a joined chain) is found
// by errors.As in the parent, fields intact, through Apply, ApplyAsync and
// Map (one by one and batched); an unregistered one keeps its message.
func TestRegisterErrorTypeAcrossPool(t *testing.T) {
	p := newPool(t, 2)
	ctx := within(t)
	for kind := range 5 {
		_, err := mp.Apply[int](ctx, p, typedFail, kind)
		var te *mp.TaskError
		if !errors.As(err, &te) {
			t.Fatalf("Apply: %T %v, want a *TaskError", err, err)
		}
		checkTyped(t, kind, err)
		_, err = mp.ApplyAsync[int](p, typedFail, []any{kind}).Get(ctx)
		checkTyped(t, kind, err)
	}
	for _, chunk := range []int{1, 5} {
		_, err := mp.Map[int](ctx, p, typedFail, []int{0, 1, 2, 3, 4}, mp.WithChunkSize(chunk))
		var me *mp.MapError
		if !errors.As(err, &me) || len(me.Errs) != 5 {
			t.Fatalf("Map, chunks of %d: %v", chunk, err)
		}
		for kind, e := range me.Errs {
			checkTyped(t, kind, e)
		}
	}
	closeAndJoin(t, p)
}

// TestRegisterErrorTypeAcrossProcess: the same through Process.Join, and
// through Thread.Join, where the error is the function's own.
func TestRegisterErrorTypeAcrossProcess(t *testing.T) {
	for kind := range 5 {
		pr := mp.NewProcess(typedFailProcess, kind)
		if err := pr.Start(); err != nil {
			t.Fatal(err)
		}
		err := pr.Join(within(t))
		var pe *mp.ProcessError
		if !errors.As(err, &pe) {
			t.Fatalf("Process: %T %v, want a *ProcessError", err, err)
		}
		checkTyped(t, kind, err)

		th := mp.NewThread(typedFailProcess, kind)
		if err := th.Start(); err != nil {
			t.Fatal(err)
		}
		err = th.Join(within(t))
		if kind == 3 {
			// In the same process nothing is lost, registered or not.
			var pe *plainError
			if !errors.As(err, &pe) || pe.X != 1 {
				t.Fatalf("Thread: %v, want the *plainError itself", err)
			}
			continue
		}
		checkTyped(t, kind, err)
	}
}

// TestRegisterErrorTypeRefusesWhatCannotTravel: an interface or unnamed
// type is a programming error, found at start-up.
func TestRegisterErrorTypeRefusesWhatCannotTravel(t *testing.T) {
	for name, register := range map[string]func(){
		"interface": mp.RegisterErrorType[error],
		"unnamed":   mp.RegisterErrorType[*struct{ error }],
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("RegisterErrorType of an %s type did not panic", name)
				}
			}()
			register()
		}()
	}
}
