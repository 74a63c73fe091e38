// Asynchronous futex waits for the event loop, without the libuv threadpool.
//
// A few long-lived threads each sleep in one futex_waitv(2) over up to 127 distinct words plus a
// private control word that wakes them when the set of waits changes. Waiting on the libuv pool
// (Napi::AsyncWorker) was measured to starve fs work after 8 pending waits; a fresh thread per
// wait had a millisecond tail. Completions are handed to the owner through `notify`, which runs on
// a waiter thread and must only signal (the binding uses a thread-safe function).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "futex.h"

namespace mp {

class Waiter {
 public:
  struct Completion {
    uint64_t id;
    futex::WaitResult result;
  };

  explicit Waiter(std::function<void()> notify);
  ~Waiter();
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // Starts wait `id` (the caller's, unique among its pending waits) while *addr == expected, for
  // at most timeout_ms (< 0: for ever). The word is only ever touched by the kernel, so an
  // unmapped word completes as kFault.
  void Add(uint64_t id, uint32_t* addr, uint32_t expected, int64_t timeout_ms);

  // Forgets a wait; no completion is reported for it afterwards.
  void Cancel(uint64_t id);

  // Takes the completions reported so far.
  std::vector<Completion> Drain();

 private:
  struct Shard;
  void Run(Shard* shard);

  std::function<void()> notify_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<Completion> done_;
  bool stopping_ = false;
};

}  // namespace mp
