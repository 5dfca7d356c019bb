// Package fdutil keeps the library's file descriptors off 0, 1 and 2.
//
// A program that closed its standard input, output or error (daemons do)
// gets the lowest free descriptor from its next open: without care that is
// the library's memfd or control socket, and the runtime's panic messages,
// or a child's first Println, then write into shared memory.
package fdutil

import "golang.org/x/sys/unix"

// Above2 returns fd if it is above 2; otherwise a close-on-exec duplicate of
// it numbered 3 or more, closing fd. On error fd is closed.
func Above2(fd int) (int, error) {
	if fd > 2 || fd < 0 {
		return fd, nil
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	unix.Close(fd)
	if err != nil {
		return -1, err
	}
	return nfd, nil
}
