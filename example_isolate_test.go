package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/multiproc/mp"
)

// openFiles opens n files and closes them, as a plug-in might.
func openFiles(n int) (int, error) {
	var fs []*os.File
	defer func() {
		for _, f := range fs {
			f.Close()
		}
	}()
	for range n {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return len(fs), err
		}
		fs = append(fs, f)
	}
	return n, nil
}

func init() { mp.Register(openFiles) }

// Untrusted code in a pool: each worker is an isolated process, here
// allowed 64 open files. The task that wants 1000 fails alone, with a
// *LimitError; its worker is replaced and the others complete.
func ExampleWithIsolatedWorkers() {
	ctx := context.Background()
	pool := mp.Must(mp.NewPool(2, mp.WithIsolatedWorkers(mp.Limits{OpenFiles: 64})))
	defer pool.Join(ctx)
	defer pool.Close()

	got, err := mp.Map[int](ctx, pool, openFiles, []int{3, 1000, 5}, mp.WithChunkSize(1))
	var me *mp.MapError
	errors.As(err, &me)
	fmt.Println(got[0], got[2], me.Indexes, errors.Is(err, mp.ErrOpenFilesLimit))
	// Output: 3 5 [1] true
}
