#include "tracker.h"

#include <fcntl.h>
#include <poll.h>
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
constexpr size_t kMaxCreators = 1024;

struct Entry {
  pid_t pid;  // 0: free slot
  char name[kMaxName + 1];
};

struct Creator {
  pid_t pid;
  int pidfd;
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

struct State {
  Entry* entries;
  size_t n_entries;
  Creator* creators;
  size_t n_creators;

  void UnlinkAllOf(pid_t pid) {
    for (size_t i = 0; i < n_entries; ++i) {
      if (entries[i].pid != 0 && (pid == 0 || entries[i].pid == pid)) {
        UnlinkName(entries[i].name);
        entries[i].pid = 0;
      }
    }
  }

  void Watch(pid_t pid) {
    for (size_t i = 0; i < n_creators; ++i) {
      if (creators[i].pid == pid) return;
    }
    if (n_creators == kMaxCreators) return;
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
      // Already gone: its names go at once.
      UnlinkAllOf(pid);
      return;
    }
    creators[n_creators++] = Creator{pid, pidfd};
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
    Watch(pid);
  }

  void Unregister(const char* name, size_t len) {
    for (size_t i = 0; i < n_entries; ++i) {
      if (entries[i].pid != 0 && strncmp(entries[i].name, name, len) == 0 &&
          entries[i].name[len] == '\0') {
        entries[i].pid = 0;
      }
    }
  }

  // One line: "R <pid> <name>" or "U <pid> <name>".
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

  size_t bytes = kMaxNames * sizeof(Entry) + kMaxCreators * sizeof(Creator);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (mem == MAP_FAILED) _exit(1);
  State state{static_cast<Entry*>(mem), 0,
              reinterpret_cast<Creator*>(static_cast<char*>(mem) + kMaxNames * sizeof(Entry)), 0};

  static char buf[8192];
  size_t used = 0;
  static struct pollfd fds[kMaxCreators + 1];
  for (;;) {
    fds[0] = {kPipeFd, POLLIN, 0};
    for (size_t i = 0; i < state.n_creators; ++i) fds[i + 1] = {state.creators[i].pidfd, POLLIN, 0};
    int n = poll(fds, state.n_creators + 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    // The pipe first: a creator's last registrations are in it before its pidfd fires.
    if (fds[0].revents != 0) {
      ssize_t got = read(kPipeFd, buf + used, sizeof buf - used);
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) break;  // every holder is gone
      if (got > 0) {
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
    }
    for (size_t i = 0; i < state.n_creators;) {
      if (fds[i + 1].revents != 0 && fds[i + 1].fd == state.creators[i].pidfd) {
        state.UnlinkAllOf(state.creators[i].pid);
        close(state.creators[i].pidfd);
        state.creators[i] = state.creators[--state.n_creators];
        fds[i + 1] = fds[state.n_creators + 1];
      } else {
        ++i;
      }
    }
  }
  state.UnlinkAllOf(0);
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
