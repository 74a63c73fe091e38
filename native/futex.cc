#include "futex.h"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>

#include "sysfail.h"

namespace mp::futex {

WaitResult Wait(uint32_t* addr, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts;
  struct timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tsp = &ts;
  }
  long rc = syscall(SYS_futex, addr, FUTEX_WAIT, expected, tsp, nullptr, 0);
  if (rc == 0) return kWoken;
  switch (errno) {
    case EAGAIN: return kNotEqual;
    case ETIMEDOUT: return kTimedOut;
    case EINTR: return kWoken;
    case EFAULT: return kFault;
    default: throw SysFail{"futex", errno, ""};
  }
}

int Wake(uint32_t* addr, int count) {
  long rc = syscall(SYS_futex, addr, FUTEX_WAKE, count, nullptr, nullptr, 0);
  if (rc < 0) {
    if (errno == EFAULT) return 0;
    throw SysFail{"futex", errno, ""};
  }
  return static_cast<int>(rc);
}

bool TryClaim(const Claim& claim) {
  switch (claim.kind) {
    case Claim::kTake: {
      uint32_t free_word = 0;
      if (!__atomic_compare_exchange_n(claim.word, &free_word, claim.value, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        return false;
      }
      __atomic_store_n(claim.mark, claim.mark_value, __ATOMIC_RELEASE);
      return true;
    }
    case Claim::kSeen:
      if (__atomic_load_n(claim.word, __ATOMIC_ACQUIRE) != claim.value) return false;
      __atomic_add_fetch(claim.mark, claim.mark_value, __ATOMIC_ACQ_REL);
      return true;
    case Claim::kCount: {
      uint32_t count = __atomic_load_n(claim.word, __ATOMIC_ACQUIRE);
      for (;;) {
        if (static_cast<int32_t>(count) <= 0) return false;
        // A failed CAS reloads `count`: another taker or giver moved it; look again.
        if (__atomic_compare_exchange_n(claim.word, &count, count - 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
      }
      __atomic_add_fetch(claim.mark, claim.mark_value, __ATOMIC_ACQ_REL);
      return true;
    }
    case Claim::kNone:
      break;
  }
  return false;
}

void UndoClaim(const Claim& claim) {
  switch (claim.kind) {
    case Claim::kTake:
      // The mark first, then the word: as a release, no later owner sees this one's mark.
      __atomic_store_n(claim.mark, 0, __ATOMIC_RELEASE);
      __atomic_store_n(claim.word, 0, __ATOMIC_RELEASE);
      Wake(claim.word, 1);
      break;
    case Claim::kSeen:
      __atomic_sub_fetch(claim.mark, claim.mark_value, __ATOMIC_ACQ_REL);
      break;
    case Claim::kCount:
      __atomic_sub_fetch(claim.mark, claim.mark_value, __ATOMIC_ACQ_REL);
      __atomic_add_fetch(claim.word, 1, __ATOMIC_ACQ_REL);
      Wake(claim.word, 1);
      break;
    case Claim::kNone:
      break;
  }
}

bool ProcessGone(pid_t pid, uint32_t start) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  // A killed process that its parent has not reaped yet still answers kill(); its state is Z.
  // The same read gives the start time, which tells a reused pid (one read, not two: a
  // contended acquire makes this call).
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // The fields follow the last ')' (the command name may itself contain ')').
  char* close_paren = nullptr;
  for (char* p = buf; *p != '\0'; ++p) {
    if (*p == ')') close_paren = p;
  }
  if (close_paren == nullptr || close_paren[1] == '\0') return false;
  char state = close_paren[2];
  if (state == 'Z' || state == 'X') return true;
  if (start == 0) return false;
  // Field 3 is the state; field 22, 19 fields on, the start time in clock ticks since boot.
  const char* p = close_paren + 2;
  for (int field = 3; field < 22 && *p != '\0'; ++p) {
    if (*p == ' ') ++field;
  }
  if (*p < '0' || *p > '9') return false;  // unreadable: the pid alone decides
  uint64_t ticks = 0;
  for (; *p >= '0' && *p <= '9'; ++p) ticks = ticks * 10 + static_cast<uint64_t>(*p - '0');
  return static_cast<uint32_t>(ticks) != start;
}

int64_t MonotonicNowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace mp::futex
