// The uncontended paths of the message ring that Queue and Pipe stand on (lib/ring.ts holds the
// whole protocol: layout, waits, kill-safety). Here only the two steps a busy queue takes per
// message, put and take, with the same stores in the same order as ring.ts's tryPut/tryGet, so
// that either side may serve any message. In C++ because in JS they were the largest code V8
// had to optimize, and on 2 cores its compiler threads competed with both ends of a busy queue.
//
// A put or take never waits: when the ring's mutex is held, or there is no room or nothing
// ready, it says so and the caller takes ring.ts's slow path, which waits. That path's short
// spins before it sleeps are here too (Spin*): bounded to microseconds, they never sleep.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mp::ring {

// Header words (int32 indexes) and frame layout: the same numbers as lib/ring.ts.
constexpr size_t kHeaderBytes = 128;
constexpr int kNotEmpty = 2, kNotFull = 3, kClosed = 4, kUnfinished = 7, kMaxSize = 8;
constexpr int kLock = 12, kLockStart = 14;
constexpr int kReserve = 16, kClaim = 17, kCount = 18, kHead = 19, kSleptGet = 20, kSleptPut = 21;
constexpr uint32_t kFrameHead = 16;
constexpr int kLength = 0, kState = 1, kPid = 2, kStart = 3;
constexpr uint32_t kWriting = 1, kReady = 2, kReading = 3, kDone = 4, kStateMask = 0xff;
constexpr uint32_t kCounted = 1u << 16;
constexpr uint32_t kCopyUnderLock = 256;
// Message kinds (ring.ts Kind): the ones a value is made of here, without v8.deserialize.
constexpr uint32_t kKindNumber = 1, kKindString = 2, kKindBytes = 3, kKindUndefined = 4, kKindNull = 5, kKindTrue = 6,
                   kKindFalse = 7;
// The ring's mutex is a Lock of lib/synchronize.ts: owner word, depth, owner's start time.
constexpr uint32_t kLockWaiters = 0x40000000;

enum Status : int {
  kOk = 0,
  kLocked = -1,  // the mutex is held by someone else
  kNoRoom = -2,  // full (or at maxsize)
  kShut = -3,    // closed: no more puts
  kEmpty = -4,
  kBusy = -5,    // the oldest frame is still being written
  kOther = -6,   // the oldest frame is of a kind the caller does not take
};

// Who is calling: the lock owner id of this thread, its process's start time and pid, as
// synchronize.ts and liveness.ts record them.
struct Self {
  uint32_t lock_id;
  uint32_t start;
  uint32_t pid;
};

// A ring segment: header, then a power-of-two data area.
class View {
 public:
  // `base` and `size` are the whole segment (header included).
  View(void* base, size_t size);
  bool valid() const { return capacity_ >= 64 && (capacity_ & (capacity_ - 1)) == 0; }
  uint32_t capacity() const { return capacity_; }

  // Puts one message (a number's payload is its 8 bytes). kOk, kLocked, kNoRoom or kShut.
  Status TryPut(const Self& self, const uint8_t* bytes, uint32_t length, uint32_t kind, bool counted);

  // Claims the oldest ready frame, if its kind is one of `kinds` (bit 1 << kind). kOk with its
  // position, length and kind; or kLocked, kEmpty, kBusy, kOther.
  struct Claimed {
    uint32_t pos;
    uint32_t length;
    uint32_t kind;
  };
  Status TryClaim(const Self& self, Claimed* out, uint32_t kinds = ~0u);

  // Gives up a frame this process claimed and cannot deliver: it stays claimed with no owner
  // (pid 0), for the next consumer that looks for frames of dead consumers to take over.
  void Abandon(uint32_t pos);

  // Whether the frame at `pos` is claimed (READING) by process `pid`: the only frame a take may
  // copy out and finish.
  bool ClaimedBy(uint32_t pos, uint32_t pid) const;

  // Copies `n` payload bytes of the claimed frame at `pos`, from payload offset 0, into `dest`.
  void CopyOut(uint32_t pos, uint8_t* dest, uint32_t n) const;
  // The payload of the frame at `pos` in place, if its `n` bytes do not wrap around the ring's end;
  // else null (CopyOut then).
  const uint8_t* PayloadIfWhole(uint32_t pos, uint32_t n) const;
  // The payload length in the head of the frame at `pos`.
  uint32_t LengthAt(uint32_t pos) const;
  double NumberAt(uint32_t pos) const;

  // Marks the claimed frame done, frees what it can, and tells producers about room.
  void Finish(uint32_t pos);

  // The spins before a sleep, each at most `ns` (a sleep and its wake cost 20-70 µs here, a
  // 64 KiB copy 5-10). In C++ because a JS spin loop is the first thing V8 compiles, and on 2
  // cores its compiler threads took the cores both ends of a busy queue needed.
  // Until a frame is ready to claim or the ring is closed: true if one is ready.
  bool SpinUntilReady(int64_t ns) const;
  // While the ring is not empty and its oldest frame is still being written: true once it is ready.
  bool SpinWhileBusy(int64_t ns) const;
  // While header word `word` holds `seen` and the ring is open: true once it changed.
  bool SpinWhile(int word, uint32_t seen, int64_t ns) const;

 private:
  uint32_t* Word(int i) const { return words_ + i; }
  // Positions are 16-aligned in a sound ring; masking keeps a scribbled header's from reaching
  // past the data area (or, misaligned, faulting an atomic access).
  uint32_t* Frame(uint32_t pos) const { return reinterpret_cast<uint32_t*>(data_ + (pos & mask_ & ~15u)); }
  bool ReadyHint() const;
  bool TryLock(const Self& self);
  void Unlock();
  void AdvanceHead();
  void Bump(int word, int slept);
  void CopyIn(uint32_t pos, const uint8_t* bytes, uint32_t n);

  uint32_t* words_;
  uint8_t* data_;
  uint32_t capacity_;
  uint32_t mask_;
};

inline uint32_t FrameSize(uint32_t length) { return kFrameHead + ((length + 15) & ~15u); }

}  // namespace mp::ring
