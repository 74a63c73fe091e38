#include "tracker.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "sysfail.h"

namespace mp::tracker {
namespace {

constexpr int kSockFd = 3;
constexpr size_t kMaxName = 255;
constexpr size_t kMaxNames = 1 << 16;
// Descriptors kept for objects in flight: an open-addressing table, as the tracker may not malloc.
constexpr size_t kSlots = 1 << 17;
constexpr size_t kMaxRecord = 8192;
constexpr int kEmpty = -1;
constexpr int kTombstone = -2;

struct Entry {
  pid_t pid;  // 0: free slot
  char name[kMaxName + 1];
};

struct Kept {
  uint64_t dev;
  uint64_t ino;
  int fd;     // kEmpty, kTombstone, or the descriptor held
  int count;  // deposits not yet withdrawn
};

// Everything below runs in the tracker child only.

void UnlinkName(const char* name) {
  char path[sizeof("/dev/shm/") + kMaxName];
  size_t prefix = sizeof("/dev/shm/") - 1;
  memcpy(path, "/dev/shm/", prefix);
  size_t len = strnlen(name, kMaxName);
  memcpy(path + prefix, name, len);
  path[prefix + len] = '\0';
  unlink(path);
}

bool ParseNumber(const char*& p, const char* end, uint64_t* out) {
  uint64_t v = 0;
  const char* start = p;
  while (p < end && *p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
  *out = v;
  return p > start;
}

// Sends one record, with `fd` attached when it is >= 0.
bool SendRecord(int sock, const char* data, size_t len, int fd) {
  struct iovec iov = {const_cast<char*>(data), len};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) return true;
    if (errno != EINTR) return false;
  }
}

// Receives one record into buf; the first descriptor attached (if any) in *fd, the others closed.
// Returns its length, 0 at EOF, < 0 on error (errno set).
ssize_t ReceiveRecord(int sock, char* buf, size_t size, int* fd) {
  struct iovec iov = {buf, size};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  *fd = -1;
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (*fd < 0) {
        *fd = received;
      } else {
        close(received);
      }
    }
  }
  return n;
}

// The names registered by the processes of one tree, and the descriptors of objects in flight. A
// name lives until someone unlinks it (and says so) or until the whole tree is gone: the tracker
// reads EOF once every process that held the other end of its socket has exited, however it
// exited. A descriptor is held from its deposit until every deposit was withdrawn.
struct State {
  Entry* entries;
  size_t n_entries;
  Kept* kept;

  void UnlinkAll() {
    for (size_t i = 0; i < n_entries; ++i) {
      if (entries[i].pid != 0) {
        UnlinkName(entries[i].name);
        entries[i].pid = 0;
      }
    }
  }

  void Register(pid_t pid, const char* name, size_t len) {
    size_t slot = n_entries;
    for (size_t i = 0; i < n_entries; ++i) {
      if (entries[i].pid == 0) {
        slot = i;
        break;
      }
    }
    if (slot == kMaxNames) return;
    if (slot == n_entries) ++n_entries;
    entries[slot].pid = pid;
    memcpy(entries[slot].name, name, len);
    entries[slot].name[len] = '\0';
  }

  void Unregister(const char* name, size_t len) {
    for (size_t i = 0; i < n_entries; ++i) {
      if (entries[i].pid != 0 && strncmp(entries[i].name, name, len) == 0 &&
          entries[i].name[len] == '\0') {
        entries[i].pid = 0;
      }
    }
    while (n_entries > 0 && entries[n_entries - 1].pid == 0) --n_entries;
  }

  // The slot of (dev, ino), or with `insert` a free one for it; nullptr if there is none.
  Kept* Find(uint64_t dev, uint64_t ino, bool insert) {
    size_t i = static_cast<size_t>((ino * 0x9E3779B97F4A7C15ULL) ^ dev) & (kSlots - 1);
    Kept* free_slot = nullptr;
    for (size_t probe = 0; probe < kSlots; ++probe, i = (i + 1) & (kSlots - 1)) {
      Kept* k = &kept[i];
      if (k->fd == kEmpty) return insert ? (free_slot != nullptr ? free_slot : k) : nullptr;
      if (k->fd == kTombstone) {
        if (free_slot == nullptr) free_slot = k;
        continue;
      }
      if (k->dev == dev && k->ino == ino) return k;
    }
    return insert ? free_slot : nullptr;
  }

  void Deposit(uint64_t dev, uint64_t ino, int fd) {
    Kept* k = Find(dev, ino, true);
    if (k == nullptr) {
      close(fd);  // full: the receiver falls back to other ways
    } else if (k->fd >= 0) {
      ++k->count;
      close(fd);
    } else {
      *k = Kept{dev, ino, fd, 1};
    }
  }

  // Answers on `reply` (if >= 0) with "F" and the descriptor, or "N"; then counts one withdrawal.
  void Withdraw(uint64_t dev, uint64_t ino, int reply) {
    Kept* k = Find(dev, ino, false);
    if (reply >= 0) {
      if (k != nullptr) {
        SendRecord(reply, "F", 1, k->fd);
      } else {
        SendRecord(reply, "N", 1, -1);
      }
      close(reply);
    }
    if (k != nullptr && --k->count <= 0) {
      close(k->fd);
      k->fd = kTombstone;
    }
  }

  // A line: "R <pid> <name>" (registered by pid) or "U <pid> <name>" (unlinked by pid).
  void HandleLine(const char* line, size_t len) {
    if (len < 5 || line[1] != ' ') return;
    pid_t pid = 0;
    size_t i = 2;
    while (i < len && line[i] >= '0' && line[i] <= '9') pid = pid * 10 + (line[i++] - '0');
    if (i >= len || line[i] != ' ' || pid <= 0) return;
    const char* name = line + i + 1;
    size_t name_len = len - i - 1;
    if (name_len == 0 || name_len > kMaxName) return;
    if (line[0] == 'R') Register(pid, name, name_len);
    if (line[0] == 'U') Unregister(name, name_len);
  }

  // A record: "D <dev> <ino>" with a descriptor, "W <dev> <ino>" with or without a reply socket,
  // or lines of names.
  void Handle(const char* rec, size_t len, int fd) {
    if (len >= 1 && (rec[0] == 'D' || rec[0] == 'W')) {
      const char* p = rec + 1;
      const char* end = rec + len;
      uint64_t dev = 0, ino = 0;
      bool ok = p < end && *p++ == ' ' && ParseNumber(p, end, &dev) && p < end && *p++ == ' ' &&
                ParseNumber(p, end, &ino);
      if (!ok) {
        if (fd >= 0) close(fd);
      } else if (rec[0] == 'D') {
        if (fd >= 0) Deposit(dev, ino, fd);
      } else {
        Withdraw(dev, ino, fd);
      }
      return;
    }
    if (fd >= 0) close(fd);
    size_t start = 0;
    for (size_t i = 0; i < len; ++i) {
      if (rec[i] == '\n') {
        HandleLine(rec + start, i - start);
        start = i + 1;
      }
    }
  }
};

[[noreturn]] void RunTracker() {
  // Leave the parent's session and process group: Ctrl-C at the terminal must not kill the one
  // process whose job is to clean up after a Ctrl-C.
  setsid();
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  prctl(PR_SET_NAME, "nmp-tracker", 0, 0, 0);
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
  }
  if (syscall(SYS_close_range, kSockFd + 1, ~0U, 0) != 0) {
    for (int fd = kSockFd + 1; fd < 65536; ++fd) close(fd);
  }
  // Objects in flight are held here: allow as many descriptors as the hard limit lets us.
  struct rlimit limit;
  if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, nullptr, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &limit, nullptr);
  }

  size_t names_bytes = kMaxNames * sizeof(Entry);
  size_t bytes = names_bytes + kSlots * sizeof(Kept);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (mem == MAP_FAILED) _exit(1);
  State state{static_cast<Entry*>(mem), 0, reinterpret_cast<Kept*>(static_cast<char*>(mem) + names_bytes)};
  for (size_t i = 0; i < kSlots; ++i) state.kept[i].fd = kEmpty;
  static char buf[kMaxRecord];
  for (;;) {
    int fd;
    ssize_t n = ReceiveRecord(kSockFd, buf, sizeof buf, &fd);
    if (n <= 0) break;  // EOF: every process of the tree is gone
    state.Handle(buf, static_cast<size_t>(n), fd);
  }
  state.UnlinkAll();
  _exit(0);
}

}  // namespace

Started Start() {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) throw SysFail{"socketpair", errno, ""};
  // No signal may reach the child before it blocks them all: Node's handlers would run in it and
  // write to the parent's signal pipe.
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = fork();
  int err = errno;
  if (pid != 0) pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    throw SysFail{"fork", err, ""};
  }
  if (pid == 0) {
    close(fds[1]);
    if (fds[0] != kSockFd) {
      dup2(fds[0], kSockFd);
      close(fds[0]);
    }
    RunTracker();
  }
  close(fds[0]);
  return Started{fds[1], pid};
}

void Deposit(int sock, uint64_t dev, uint64_t ino, int fd) {
  char rec[64];
  int len = snprintf(rec, sizeof rec, "D %llu %llu", static_cast<unsigned long long>(dev),
                     static_cast<unsigned long long>(ino));
  if (!SendRecord(sock, rec, static_cast<size_t>(len), fd)) throw SysFail{"sendmsg", errno, ""};
}

int Withdraw(int sock, uint64_t dev, uint64_t ino, bool want_fd, int timeout_ms) {
  char rec[64];
  int len = snprintf(rec, sizeof rec, "W %llu %llu", static_cast<unsigned long long>(dev),
                     static_cast<unsigned long long>(ino));
  if (!want_fd) {
    if (!SendRecord(sock, rec, static_cast<size_t>(len), -1)) throw SysFail{"sendmsg", errno, ""};
    return -1;
  }
  // The answer comes on a socket of our own, sent along with the request: the tracker's socket
  // is shared by the whole tree, so an answer on it could reach another process.
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) throw SysFail{"socketpair", errno, ""};
  bool sent = SendRecord(sock, rec, static_cast<size_t>(len), pair[1]);
  int err = errno;
  close(pair[1]);
  if (!sent) {
    close(pair[0]);
    throw SysFail{"sendmsg", err, ""};
  }
  struct pollfd pfd = {pair[0], POLLIN, 0};
  int ready;
  do {
    ready = poll(&pfd, 1, timeout_ms);
  } while (ready < 0 && errno == EINTR);
  int fd = -1;
  if (ready > 0) {
    char answer[8];
    ssize_t n = ReceiveRecord(pair[0], answer, sizeof answer, &fd);
    if (n <= 0 || answer[0] != 'F') {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  }
  close(pair[0]);
  return fd;
}

}  // namespace mp::tracker
