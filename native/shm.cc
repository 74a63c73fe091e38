#include "shm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "sysfail.h"

namespace mp::shm {
namespace {

// Reserves the pages of a fresh segment. posix_fallocate returns the error instead of errno.
void Reserve(int fd, size_t size, const std::string& path) {
  if (size == 0) return;
  int err = posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (err != 0) throw SysFail{"fallocate", err, path};
}

void Resize(int fd, size_t size, const std::string& path) {
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) throw SysFail{"ftruncate", errno, path};
}

}  // namespace

int CreateAnonymous(size_t size) {
  int fd = memfd_create("node-multiprocessing", MFD_CLOEXEC);
  if (fd < 0) throw SysFail{"memfd_create", errno, ""};
  try {
    Resize(fd, size, "");
    Reserve(fd, size, "");
  } catch (...) {
    close(fd);
    throw;
  }
  return fd;
}

int CreateNamed(const std::string& name, size_t size) {
  std::string path = "/" + name;
  int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw SysFail{"shm_open", errno, name};
  try {
    Resize(fd, size, name);
    Reserve(fd, size, name);
  } catch (...) {
    close(fd);
    shm_unlink(path.c_str());
    throw;
  }
  return fd;
}

int OpenNamed(const std::string& name) {
  std::string path = "/" + name;
  int fd = shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) throw SysFail{"shm_open", errno, name};
  return fd;
}

int OpenFromProcess(pid_t pid, int remote_fd, uint64_t dev, uint64_t ino) {
  std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(remote_fd);
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw SysFail{"open", errno, path};
  FileId id;
  try {
    id = Identify(fd);
  } catch (...) {
    close(fd);
    throw;
  }
  if (id.dev != dev || id.ino != ino) {
    close(fd);
    // The creator closed the object and reused the fd number: the segment is gone.
    throw SysFail{"open", ESTALE, path};
  }
  return fd;
}

int CheckOwnFd(int fd, uint64_t dev, uint64_t ino) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  if (static_cast<uint64_t>(st.st_dev) != dev || static_cast<uint64_t>(st.st_ino) != ino) return -1;
  return fd;
}

FileId Identify(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw SysFail{"fstat", errno, ""};
  return FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                static_cast<uint64_t>(st.st_size)};
}

void* Map(int fd, size_t size, bool populate) {
  size_t length = size == 0 ? 1 : size;
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (addr == MAP_FAILED) throw SysFail{"mmap", errno, ""};
  return addr;
}

void Unmap(void* addr, size_t size) { munmap(addr, size == 0 ? 1 : size); }

void Close(int fd) { close(fd); }

void Unlink(const std::string& name) {
  std::string path = "/" + name;
  if (shm_unlink(path.c_str()) != 0) throw SysFail{"shm_unlink", errno, name};
}

}  // namespace mp::shm
