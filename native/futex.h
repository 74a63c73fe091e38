// Process-shared futex waits and wakes on 32-bit words in shared memory, and the liveness check
// that lets a lock's waiters notice that the owner died.
//
// The words are never FUTEX_PRIVATE: the waiter and the waker are in different processes.
#pragma once
#include <sys/types.h>

#include <cstdint>

namespace mp::futex {

enum WaitResult : int {
  kWoken = 0,      // a wake arrived (or a signal interrupted: callers re-check their word)
  kTimedOut = 1,
  kNotEqual = 2,   // the word no longer held `expected` when we tried to sleep
  kFault = 3,      // the word is no longer mapped
  kPolled = 4,     // the binding saw the word change while polling it, before any sleep
};

// Sleeps while *addr == expected, at most timeout_ns (< 0: for ever).
WaitResult Wait(uint32_t* addr, uint32_t expected, int64_t timeout_ns);

// A poll that got less than half of its wall time was kept from its word by other work (other
// processes on its core, or its own thread's callbacks): polling there takes a core from whoever
// would answer, or wins nothing a sleep would not. Too short a poll tells nothing. (`ran_ns` is
// measured by the poller, from the gaps between its looks: reading the thread's CPU clock is a
// system call, which cost a microsecond on every wake-up.)
inline bool WasContended(uint64_t wall_ns, uint64_t ran_ns) {
  return wall_ns > 200000 && ran_ns < wall_ns / 2;
}

// A gap between two turns of a polling loop longer than this is time the thread was away.
constexpr uint64_t kStallAfterNs = 50000;

// Wakes up to `count` waiters; returns how many were woken.
int Wake(uint32_t* addr, int count);

// True when `pid` has exited (gone, or a zombie nobody has reaped yet), or, given the start
// time its owner recorded (the low 32 bits of /proc/<pid>/stat's field 22; 0: none), when the
// live process under that pid started at another time: the pid was reused.
bool ProcessGone(pid_t pid, uint32_t start = 0);

int64_t MonotonicNowNs();

}  // namespace mp::futex
