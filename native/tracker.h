// The name tracker: a tiny process that unlinks the named shared-memory segments of a process
// tree once the whole tree has exited, however it exited (kill -9 included), as Python's
// resource_tracker keeps a name for the life of the program.
//
// Every process of a tree holds the write end of one pipe and registers each name it creates
// ("R <pid> <name>\n") or unlinks ("U <pid> <name>\n"). At EOF (every holder of the write end has
// exited) the tracker unlinks whatever is still registered and exits. Attachers never register,
// so they never unlink; a name a child made stays attachable after that child exits.
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
