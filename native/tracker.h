// The name tracker: a tiny process that unlinks the named shared-memory segments of a process
// tree once the whole tree has exited, however it exited (kill -9 included), as Python's
// resource_tracker keeps a name for the life of the program.
//
// Every process of a tree holds one end of a SOCK_SEQPACKET socket pair; the tracker reads the
// other. Records are lines of names, each created ("R <pid> <name>\n") or unlinked
// ("U <pid> <name>\n"); or a descriptor deposited ("D <dev> <ino>" with SCM_RIGHTS) or withdrawn
// ("W <dev> <ino>", with a socket to answer on when the withdrawer needs the descriptor).
// At EOF (every process of the tree has exited) the tracker unlinks whatever is still registered
// and exits. Attachers never register, so they never unlink; a name a child made stays attachable
// after that child exits.
//
// Deposits are how a shared object in flight outlives its sender: the sender deposits the
// segment's descriptor before the message leaves, the receiver withdraws it (through SCM_RIGHTS,
// not /proc), and the tracker closes its copy once every deposit was withdrawn.
#pragma once
#include <sys/types.h>

#include <cstdint>

namespace mp::tracker {

struct Started {
  int write_fd;  // the tree's end of the socket; O_CLOEXEC, our spawner passes it on explicitly
  pid_t pid;
};

// Forks the tracker. It runs only raw syscalls (no allocation, no locks) since it never execs:
// the fork copies a multi-threaded process whose other threads may hold locks.
Started Start();

// Deposits a descriptor under the identity (dev, ino) of what it refers to. The caller keeps its fd.
void Deposit(int sock, uint64_t dev, uint64_t ino, int fd);

// Withdraws one deposit of (dev, ino). With want_fd, returns a new descriptor for it (close-on-exec)
// or -1 if the tracker holds none (or does not answer within timeout_ms); else returns -1 at once.
int Withdraw(int sock, uint64_t dev, uint64_t ino, bool want_fd, int timeout_ms);

}  // namespace mp::tracker
