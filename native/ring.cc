#include "ring.h"

#include <climits>
#include <cstring>

#include "futex.h"

namespace mp::ring {
namespace {

// ring.ts reads and writes some words with Atomics (sequentially consistent) and some as plain
// Int32Array elements; each is mirrored here by the same strength as in reserve() and
// putLocked(). (tryPutValue writes its words under the mutex plain: the release orders them.)
inline uint32_t Load(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
inline void Store(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
inline uint32_t Plain(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void SetPlain(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins while `busy()` holds, at most `ns`; the clock is read every 32 turns. True if it ended
// because `busy()` stopped holding.
template <typename Busy>
bool SpinFor(int64_t ns, Busy busy) {
  int64_t deadline = futex::MonotonicNowNs() + ns;
  for (unsigned n = 1;; ++n) {
    if (!busy()) return true;
    if ((n & 31) == 0 && futex::MonotonicNowNs() >= deadline) return !busy();
    CpuRelax();
  }
}

}  // namespace

View::View(void* base, size_t size)
    : words_(static_cast<uint32_t*>(base)),
      data_(static_cast<uint8_t*>(base) + kHeaderBytes),
      capacity_(size > kHeaderBytes && size - kHeaderBytes <= UINT32_MAX ? static_cast<uint32_t>(size - kHeaderBytes) : 0),
      mask_(capacity_ - 1) {}

// Lock.tryAcquire() of synchronize.ts.
bool View::TryLock(const Self& self) {
  uint32_t free = 0;
  if (!__atomic_compare_exchange_n(Word(kLock), &free, self.lock_id, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    return false;
  }
  SetPlain(Word(kLockStart), self.start);
  return true;
}

// Lock.release().
void View::Unlock() {
  SetPlain(Word(kLockStart), 0);
  uint32_t old = __atomic_exchange_n(Word(kLock), 0, __ATOMIC_SEQ_CST);
  if (old & kLockWaiters) futex::Wake(Word(kLock), 1);
}

// ring.ts advanceHead(): lock-free, a CAS per done frame.
void View::AdvanceHead() {
  for (;;) {
    uint32_t h = Load(Word(kHead));
    if (h == Load(Word(kClaim))) return;
    uint32_t* f = Frame(h);
    if ((Load(f + kState) & kStateMask) != kDone) return;
    uint32_t next = h + FrameSize(Plain(f + kLength));
    __atomic_compare_exchange_n(Word(kHead), &h, next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  }
}

// ring.ts bump(): wakes the sleepers only if the newest one sleeps on the value the word had.
void View::Bump(int word, int slept) {
  uint32_t old = __atomic_fetch_add(Word(word), 1, __ATOMIC_SEQ_CST);
  if (Load(Word(slept)) == old) futex::Wake(Word(word), INT_MAX);
}

void View::CopyIn(uint32_t pos, const uint8_t* bytes, uint32_t n) {
  uint32_t start = (pos + kFrameHead) & mask_;
  uint32_t first = n < capacity_ - start ? n : capacity_ - start;
  memcpy(data_ + start, bytes, first);
  if (first < n) memcpy(data_, bytes + first, n - first);
}

// ring.ts readyHint(): is the oldest unclaimed frame ready? Read without the mutex.
bool View::ReadyHint() const {
  uint32_t at = Load(Word(kClaim));
  if (at == Load(Word(kReserve))) return false;
  return (Load(Frame(at) + kState) & kStateMask) != kWriting;
}

bool View::SpinUntilReady(int64_t ns) const {
  return SpinFor(ns, [this] { return !ReadyHint() && Load(Word(kClosed)) == 0; }) && ReadyHint();
}

bool View::SpinWhileBusy(int64_t ns) const {
  SpinFor(ns, [this] { return !ReadyHint() && Load(Word(kClaim)) != Load(Word(kReserve)); });
  return ReadyHint();
}

bool View::SpinWhile(int word, uint32_t seen, int64_t ns) const {
  SpinFor(ns, [this, word, seen] { return Load(Word(word)) == seen && Load(Word(kClosed)) == 0; });
  return Load(Word(word)) != seen;
}

bool View::ClaimedBy(uint32_t pos, uint32_t pid) const {
  const uint32_t* f = Frame(pos);
  return (Load(f + kState) & kStateMask) == kReading && Plain(f + kPid) == pid;
}

void View::CopyOut(uint32_t pos, uint8_t* dest, uint32_t n) const {
  uint32_t start = (pos + kFrameHead) & mask_;
  uint32_t first = n < capacity_ - start ? n : capacity_ - start;
  memcpy(dest, data_ + start, first);
  if (first < n) memcpy(dest + first, data_, n - first);
}

const uint8_t* View::PayloadIfWhole(uint32_t pos, uint32_t n) const {
  uint32_t start = (pos + kFrameHead) & mask_;
  return n <= capacity_ - start ? data_ + start : nullptr;
}

uint32_t View::LengthAt(uint32_t pos) const { return Plain(Frame(pos) + kLength); }

double View::NumberAt(uint32_t pos) const {
  double value;
  memcpy(&value, data_ + ((pos + kFrameHead) & mask_), sizeof value);  // little-endian, as DataView's
  return value;
}

// ring.ts tryPut(): reserve() and putLocked().
Status View::TryPut(const Self& self, const uint8_t* bytes, uint32_t length, uint32_t kind, bool counted) {
  if (!TryLock(self)) return kLocked;
  if (Plain(Word(kClosed)) == 1) {
    Unlock();
    return kShut;
  }
  uint32_t need = FrameSize(length);
  int32_t max = static_cast<int32_t>(Plain(Word(kMaxSize)));
  if (max > 0 && static_cast<int32_t>(Plain(Word(kCount))) >= max) {
    Unlock();
    return kNoRoom;
  }
  uint32_t at = Plain(Word(kReserve));
  // More in use than the ring holds happens only to a scribbled header: no room, as in ring.ts.
  auto room = [&] {
    uint32_t used = at - Load(Word(kHead));
    return used <= capacity_ && capacity_ - used >= need;
  };
  if (!room()) {
    AdvanceHead();  // a consumer killed between its two last steps may have left it behind
    if (!room()) {
      Unlock();
      return kNoRoom;
    }
  }
  uint32_t pos = at & mask_ & ~15u;
  uint32_t* f = Frame(pos);
  SetPlain(f + kLength, length);
  SetPlain(f + kPid, self.pid);
  SetPlain(f + kStart, self.start);
  uint32_t tag = (kind << 8) | (counted ? kCounted : 0);
  bool small = length <= kCopyUnderLock;
  if (small) {
    CopyIn(pos, bytes, length);
    Store(f + kState, kReady | tag);
  } else {
    Store(f + kState, kWriting | tag);
  }
  if (counted) __atomic_fetch_add(Word(kUnfinished), 1, __ATOMIC_SEQ_CST);
  SetPlain(Word(kCount), Plain(Word(kCount)) + 1);
  Store(Word(kReserve), at + need);
  Unlock();
  if (!small) {
    CopyIn(pos, bytes, length);
    Store(f + kState, kReady | tag);
  }
  Bump(kNotEmpty, kSleptGet);
  return kOk;
}

// ring.ts tryGet(): readyHint(), then claim(false) under the mutex.
Status View::TryClaim(const Self& self, Claimed* out, uint32_t kinds) {
  uint32_t hint = Load(Word(kClaim));
  if (hint == Load(Word(kReserve))) return kEmpty;
  if ((Load(Frame(hint) + kState) & kStateMask) == kWriting) return kBusy;
  if (!TryLock(self)) return kLocked;
  for (;;) {
    uint32_t at = Plain(Word(kClaim));
    if (at == Plain(Word(kReserve))) {
      Unlock();
      return kEmpty;
    }
    uint32_t* f = Frame(at);
    uint32_t word = Load(f + kState);
    uint32_t length = Plain(f + kLength);
    uint32_t next = at + FrameSize(length);
    if ((word & kStateMask) == kWriting || length > capacity_) {
      // Being written; or a length no sound frame has, left to ring.ts's checks.
      Unlock();
      return kBusy;
    }
    if ((word & kStateMask) == kDone) {
      Store(Word(kClaim), next);  // skipped by a holder that died before it moved CLAIM on
      continue;
    }
    uint32_t kind = (word >> 8) & 0xff;
    if (kind >= 32 || (kinds & (1u << kind)) == 0) {
      Unlock();
      return kOther;
    }
    SetPlain(f + kPid, self.pid);
    SetPlain(f + kStart, self.start);
    Store(f + kState, (word & ~kStateMask) | kReading);
    SetPlain(Word(kCount), Plain(Word(kCount)) - 1);
    Store(Word(kClaim), next);
    Unlock();
    out->pos = at & mask_ & ~15u;
    out->length = length;
    out->kind = kind;
    return kOk;
  }
}

void View::Abandon(uint32_t pos) {
  uint32_t* f = Frame(pos);
  SetPlain(f + kStart, 0);
  Store(f + kPid, 0);
}

// ring.ts take(), after the copy.
void View::Finish(uint32_t pos) {
  uint32_t* state = Frame(pos) + kState;
  Store(state, (Plain(state) & ~kStateMask) | kDone);
  AdvanceHead();
  uint32_t used = Load(Word(kReserve)) - Load(Word(kHead));
  int32_t max = static_cast<int32_t>(Plain(Word(kMaxSize)));
  if (used <= capacity_ / 2 || (max > 0 && static_cast<int32_t>(Load(Word(kCount))) < max)) Bump(kNotFull, kSleptPut);
}

}  // namespace mp::ring
