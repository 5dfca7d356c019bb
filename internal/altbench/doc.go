// Package altbench holds benchmarks of what a Go programmer writes instead
// of multiproc, on the workloads of cmd/mpbench, so that mpbench can put
// them beside multiproc's figures:
//
//   - ExecJSON: worker processes started with os/exec, tasks and results as
//     JSON lines on their stdin and stdout (the common hand-rolled pool);
//   - NetRPC: net/rpc over a Unix socket to a worker process (the shape of
//     hashicorp/go-plugin);
//   - GobSocket: a Unix socket with encoding/gob (the usual hand-rolled
//     queue between two processes).
//
// Each is written the way a careful user would: buffered I/O, flushing
// only when no more input is pending, one connection per worker. The
// package has no code outside its tests.
package altbench
