// The name tracker: a tiny process that unlinks named shared-memory segments once their creator
// has exited, however it exited (kill -9 included).
//
// Every process of a tree holds the write end of one pipe and registers each name it creates
// ("R <pid> <name>\n") or unlinks ("U <pid> <name>\n"). The tracker watches each registering pid
// through a pidfd and unlinks that pid's names when it exits; at EOF (every holder of the write end
// has exited) it unlinks whatever is left and exits. Attachers never register, so they never unlink.
#pragma once
#include <sys/types.h>

namespace mp::tracker {

struct Started {
  int write_fd;  // O_CLOEXEC; our spawner passes it on to children explicitly
  pid_t pid;
};

// Forks the tracker. It runs only raw syscalls (no allocation, no locks) since it never execs:
// the fork copies a multi-threaded process whose other threads may hold locks.
Started Start();

}  // namespace mp::tracker
