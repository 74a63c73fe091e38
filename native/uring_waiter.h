// Asynchronous futex waits served by io_uring (IORING_OP_FUTEX_WAIT, Linux 6.7+), so that a wake
// from another process reaches the event loop with one sleeping thread woken instead of two.
//
// Each wait is one FUTEX_WAIT request, linked to a LINK_TIMEOUT when it has a deadline. The ring's
// fd turns readable when completions arrive: the binding polls it on the event loop and calls
// Drain() there. Everything runs on the one thread that owns the ring (the JS thread); the kernel
// does the sleeping. Create() returns null where the kernel or a seccomp filter lacks any of the
// operations used, and the thread-based Waiter (waiter.h) serves instead.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "waiter.h"

struct io_uring_sqe;
struct io_uring_cqe;

namespace mp {

class UringWaiter {
 public:
  using Completion = Waiter::Completion;

  static std::unique_ptr<UringWaiter> Create();
  ~UringWaiter();
  UringWaiter(const UringWaiter&) = delete;
  UringWaiter& operator=(const UringWaiter&) = delete;

  // The ring's fd: readable while completions wait to be drained.
  int fd() const { return fd_; }

  // Starts wait `id` (the caller's, below 2^62) while *addr == expected, for at most timeout_ms
  // (< 0: for ever). Throws SysFail (io_uring_enter) when the kernel refuses the request.
  void Add(uint64_t id, uint32_t* addr, uint32_t expected, int64_t timeout_ms);

  // Asks the kernel to drop a wait. Its completion may still arrive; callers ignore unknown ids.
  void Cancel(uint64_t id);

  // Takes the completions the kernel has posted so far.
  std::vector<Completion> Drain();

 private:
  UringWaiter() = default;
  ::io_uring_sqe* NextSqe();
  void Submit(unsigned count);

  int fd_ = -1;
  void* sq_ring_ = nullptr;
  size_t sq_ring_size_ = 0;
  void* cq_ring_ = nullptr;
  size_t cq_ring_size_ = 0;
  ::io_uring_sqe* sqes_ = nullptr;
  size_t sqes_size_ = 0;
  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned* sq_mask_ = nullptr;
  unsigned* sq_array_ = nullptr;
  unsigned* sq_flags_ = nullptr;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned* cq_mask_ = nullptr;
  ::io_uring_cqe* cqes_ = nullptr;
  unsigned pending_tail_ = 0;  // the next entry's slot; published up to here by Submit()
};

}  // namespace mp
