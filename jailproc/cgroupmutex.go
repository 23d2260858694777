package jailproc

import "sync"

// cgroupMu serialises the operations on worker groups that take the
// kernel's global cgroup_mutex: creating a group's folder, removing it and
// moving a process into it. cgroupOp runs one of them.
//
// One of them can sleep in the kernel for a whole RCU grace period, 10-16
// ms on our machines: moving a process takes cgroup_threadgroup_rwsem for
// writing, which waits for a grace period whenever no other writer took it
// within the last one, and it holds cgroup_mutex meanwhile, so that every
// other such operation waits as long. A goroutine in a system call keeps
// its P (the right to run Go code) until sysmon takes it back, and sysmon,
// which sleeps up to 10 ms once the server has been quiet for a while, is
// also the only thread that polls the network when no other does — and the
// spawn that makes the call is often the goroutine whose thread was just
// woken from netpoll by the worker's ready line. Measured in cell mode at
// an open loop of 314 requests/s: 4% of the requests waited 5-12 ms before
// their handler started, on an otherwise idle server, each time a worker
// was being moved into its group (open-loop p99 8.3 ms; 2.2 ms once fixed).
//
// So only one such call runs at a time (a second one would only wait for
// the kernel's mutex while holding the other P), and right before it a
// goroutine that does nothing is started: starting it wakes a thread for
// an idle P, which finds nothing to run and waits in netpoll while the
// call lasts. (golang/go#29734 asked for a way to say that a system call
// will block; there is none.)
var cgroupMu sync.Mutex

// cgroupOp runs op, one of the operations cgroupMu serialises.
func cgroupOp(op func() error) error {
	cgroupMu.Lock()
	defer cgroupMu.Unlock()
	go func() {}()
	return op()
}
