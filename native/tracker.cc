#include "tracker.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sysfail.h"

namespace mp::tracker {
namespace {

constexpr int kPipeFd = 3;
constexpr size_t kMaxName = 255;
constexpr size_t kMaxNames = 1 << 16;

struct Entry {
  pid_t pid;  // 0: free slot
  char name[kMaxName + 1];
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

// The names registered by the processes of one tree. A name lives until someone unlinks it (and
// says so) or until the whole tree is gone: the tracker reads EOF on its pipe once every process
// that held the write end has exited, however it exited.
struct State {
  Entry* entries;
  size_t n_entries;

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

  // One line: "R <pid> <name>" (registered by pid) or "U <pid> <name>" (unlinked by pid).
  void Handle(const char* line, size_t len) {
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
  if (syscall(SYS_close_range, kPipeFd + 1, ~0U, 0) != 0) {
    for (int fd = kPipeFd + 1; fd < 65536; ++fd) close(fd);
  }

  size_t bytes = kMaxNames * sizeof(Entry);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (mem == MAP_FAILED) _exit(1);
  State state{static_cast<Entry*>(mem), 0};
  static char buf[8192];
  size_t used = 0;
  for (;;) {
    ssize_t got = read(kPipeFd, buf + used, sizeof buf - used);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: every process of the tree is gone
    used += static_cast<size_t>(got);
    size_t start = 0;
    for (size_t i = 0; i < used; ++i) {
      if (buf[i] == '\n') {
        state.Handle(buf + start, i - start);
        start = i + 1;
      }
    }
    if (start == 0 && used == sizeof buf) used = 0;  // a line too long to be ours
    memmove(buf, buf + start, used - start);
    used -= start;
  }
  state.UnlinkAll();
  _exit(0);
}

}  // namespace

Started Start() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw SysFail{"pipe2", errno, ""};
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    throw SysFail{"fork", err, ""};
  }
  if (pid == 0) {
    close(fds[1]);
    if (fds[0] != kPipeFd) {
      dup2(fds[0], kPipeFd);
      close(fds[0]);
    }
    RunTracker();
  }
  close(fds[0]);
  return Started{fds[1], pid};
}

}  // namespace mp::tracker
