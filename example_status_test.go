package mp_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/multiproc/mp"
)

func ExampleReadStatus() {
	jobs := mp.Must(mp.NewQueue[string](10))
	defer jobs.Close()
	jobs.SetName("jobs")
	jobs.Put(context.Background(), "a")
	jobs.Put(context.Background(), "b")
	jobs.Get(context.Background())

	st, err := mp.ReadStatus()
	if err != nil {
		panic(err)
	}
	for _, q := range st.Queues {
		if q.Name == "jobs" {
			fmt.Printf("%s: %d of %d queued, %d put, %d taken\n", q.Label(), q.Len, q.Cap, q.Puts, q.Gets)
		}
	}
	// Output: jobs: 1 of 10 queued, 2 put, 1 taken
}

func ExampleSetLogger() {
	// Text records on stdout, without the parts that change from run to
	// run.
	mp.SetLogger(slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "pid" {
				return slog.Attr{}
			}
			return a
		},
	})))
	defer mp.SetLogger(nil)

	p := mp.NewProcess(fail, "no database")
	p.Name = "loader"
	p.Start()
	p.Join(context.Background())
	// Output:
	// level=INFO msg="process started" name=loader process=MainProcess
	// level=WARN msg="process exited" name=loader status=1 process=MainProcess
}
