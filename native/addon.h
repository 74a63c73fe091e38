// Per-environment state of the addon (one per main thread or worker thread that loads it).
#pragma once
#include <napi.h>

#include <memory>
#include <unordered_map>

#include "futex.h"
#include "ring.h"
#include "spawn.h"
#include "uring_waiter.h"
#include "waiter.h"

namespace mp {

// A mapping handed to JS as an external ArrayBuffer. It is unmapped by unmap() or, if JS never
// calls that, by the ArrayBuffer's finalizer: whichever comes first.
struct Mapping {
  void* addr;
  size_t size;
  bool mapped;
};

// A get's claim on a message ring (ring_binding.cc): once the ring's NOT_EMPTY word has moved,
// take the oldest message, if it is of a kind whose value is made natively, and make it.
struct RingGet {
  void* base = nullptr;  // the ring segment; null: no such claim (or no longer mapped)
  size_t size = 0;
  ring::Self self{};
};

// Claims the oldest message for `take` and makes its value: true with the value and the frame's
// position, which the caller then finishes (FinishRingGet) or, if it could not deliver the
// value, abandons (AbandonRingGet: the frame is not lost, a later consumer takes it over).
bool TryRingGet(napi_env env, const RingGet& take, napi_value* value, uint32_t* pos);
void FinishRingGet(const RingGet& take, uint32_t pos);
void AbandonRingGet(const RingGet& take, uint32_t pos);

// A pending async wait (sync_binding.cc): who is told its result, and what it may finish by
// itself (a claim of kind kNone: nothing).
struct LiveWait {
  futex::Claim claim;               // its word is the wait's even with no claim (kNone); null once unmapped
  RingGet ring;                     // or, instead of a claim, a ring take
  Napi::FunctionReference done;     // called with the WaitResult (and a claim's value)
  Napi::FunctionReference resolve;  // if set, called with the claim's value instead, for one made while polling
  int32_t* backoff = nullptr;       // where such a resolve records its hit: the budget's back-off = 1
  Napi::ObjectReference budget;     // the Int32Array `backoff` is in, kept alive meanwhile
};

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);
  ~Addon();

  // Async futex waits (sync_binding.cc): by io_uring, polled on the event loop, where the kernel
  // has it; else by waiter threads that report through wait_tsfn.
  struct UringPoll* uring = nullptr;  // owned by the event loop's handle; see sync_binding.cc
  std::unique_ptr<Waiter> waiter;
  Napi::ThreadSafeFunction wait_tsfn;
  std::unordered_map<uint64_t, LiveWait> live_waits;
  uint64_t next_wait_id = 1;
  // Async waits that poll their word from the event loop before they sleep (sync_binding.cc).
  struct WaitPoll* poll = nullptr;  // owned by the event loop's handle, like `uring`

  // Child exits (process_binding.cc).
  std::unique_ptr<spawn::ExitWatcher> exit_watcher;
  Napi::ThreadSafeFunction exit_tsfn;
  Napi::FunctionReference exit_callback;
  std::unordered_map<int, bool> watched_exits;  // pidfd -> keeps the event loop alive

  // Mappings by address (shm_binding.cc).
  std::unordered_map<void*, Mapping*> mappings;

  void UpdateWaitRef(Napi::Env env);
  // The mapping [addr, addr + size) is going away: polled waits on it end as kFault, as a kernel
  // wait on an unmapped word does, instead of reading it, and no wait's claim touches it.
  void DropPolledWaits(void* addr, size_t size);
  void UpdateExitRef(Napi::Env env);
};

void InitShm(Napi::Env env, Napi::Object exports);
void InitSync(Napi::Env env, Napi::Object exports);
void InitProcess(Napi::Env env, Napi::Object exports);
void InitRing(Napi::Env env, Napi::Object exports);

}  // namespace mp
