// Isolation shows that a child process has memory of its own (the seeds'
// global n that stays 100 in the parent), and the process facts Python
// programs print: pid and parent pid, names, terminate and is_alive.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/multiproc/mp"
)

var n = 100

func task() {
	n = 0 // changes the child's copy only
	fmt.Printf("child: n = %d\n", n)
}

func describe() {
	me := mp.CurrentProcess()
	parent, _ := mp.ParentProcess()
	fmt.Printf("child: I am %s, pid %d; my parent is %s, pid %d (os.Getppid() = %d)\n",
		me.Name, me.Pid, parent.Name, parent.Pid, os.Getppid())
}

func sleepForever() { select {} }

func init() { mp.Register(task, describe, sleepForever) }

func main() {
	mp.Init()
	defer mp.Shutdown()
	ctx := context.Background()

	p := mp.NewProcess(task)
	if err := p.Start(); err != nil {
		panic(err)
	}
	p.Join(ctx)
	fmt.Printf("parent: n = %d\n", n)

	p = mp.NewProcess(describe)
	p.Start()
	p.Join(ctx)
	fmt.Printf("parent: I am %s, pid %d; I started %s, pid %d\n",
		mp.CurrentProcess().Name, os.Getpid(), p.Name, p.Pid())

	p = mp.NewProcess(sleepForever)
	p.Start()
	fmt.Printf("%s alive after Start: %v\n", p.Name, p.IsAlive())
	p.Terminate()
	p.Join(ctx) // Python sleeps a moment here; Join waits exactly as long as needed
	code, _ := p.ExitCode()
	fmt.Printf("%s alive after Terminate and Join: %v, exit code %d\n", p.Name, p.IsAlive(), code)
}
