// Shared-memory segments: anonymous (memfd) and named (shm_open), mapped MAP_SHARED.
//
// Every function either succeeds or throws SysFail; none leaves an fd or a name behind on failure.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace mp::shm {

struct FileId {
  uint64_t dev;
  uint64_t ino;
  uint64_t size;
};

// An anonymous segment: no name anywhere, so nothing can leak when its holders die.
// The pages are reserved now, so a full tmpfs fails here with ENOSPC, never with SIGBUS later.
int CreateAnonymous(size_t size);

// A named segment, O_EXCL, mode 0600. On any failure after shm_open the name is unlinked.
int CreateNamed(const std::string& name, size_t size);

// Opens an existing named segment read-write.
int OpenNamed(const std::string& name);

// Re-opens another process's segment through /proc/<pid>/fd/<fd>, and checks that it is the
// file we expect (the fd number may have been reused for something else).
int OpenFromProcess(pid_t pid, int fd, uint64_t dev, uint64_t ino);

// Returns -1 unless our own fd `fd` is the file (dev, ino): used for fds inherited at spawn.
int CheckOwnFd(int fd, uint64_t dev, uint64_t ino);

FileId Identify(int fd);

// Maps `size` bytes (at least one page is mapped for size 0). `populate` makes the page-table
// entries now rather than by faults on first touch: right for memory that will all be cycled
// through (a queue's ring), wrong for a large segment of which a process reads a little.
void* Map(int fd, size_t size, bool populate = false);
void Unmap(void* addr, size_t size);

void Close(int fd);
void Unlink(const std::string& name);

}  // namespace mp::shm
