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
  kClaimed = 8,    // a flag on kWoken/kPolled/kNotEqual: the wait's Claim was made (TryClaim)
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

// What an async wait may finish by itself once its word has changed, so that its waiter learns
// the outcome in one call from the event loop instead of running its plan again (WaitClaim in
// lib/wait.ts). Plain words in a live mapping; `mark` is in the same one.
struct Claim {
  enum Kind : uint8_t {
    kNone = 0,
    kTake = 1,  // a lock: CAS the word from 0 to `value`, then store `mark_value` at `mark`
    kSeen = 2,  // an event: the word holds `value`; then add `mark_value` to `mark`
    kCount = 3, // a semaphore: the word, a count above 0, made one lower; then as kSeen
  };
  Kind kind = kNone;
  uint32_t* word = nullptr;
  uint32_t value = 0;
  uint32_t* mark = nullptr;
  uint32_t mark_value = 0;
};

// Makes the claim if the word allows it now; true when made.
bool TryClaim(const Claim& claim);

// Takes back a claim made for a waiter that was gone by the time it was told: a taken word is
// freed and a count given back (each waking one sleeper, as a release does); a mark gets its
// addition back.
void UndoClaim(const Claim& claim);

// Wakes up to `count` waiters; returns how many were woken.
int Wake(uint32_t* addr, int count);

// True when `pid` has exited (gone, or a zombie nobody has reaped yet), or, given the start
// time its owner recorded (the low 32 bits of /proc/<pid>/stat's field 22; 0: none), when the
// live process under that pid started at another time: the pid was reused.
bool ProcessGone(pid_t pid, uint32_t start = 0);

int64_t MonotonicNowNs();

}  // namespace mp::futex
