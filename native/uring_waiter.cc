#include "uring_waiter.h"

#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sysfail.h"

// Newer than the kernel headers this may be built against (Debian 12 ships 6.1's).
#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

namespace mp {
namespace {

constexpr unsigned kEntries = 64;         // submissions: at most two are ever pending at once
constexpr unsigned kCqEntries = 4096;     // completions; beyond this the kernel keeps them aside
constexpr uint64_t kMatchAny = 0xffffffffu;

// user_data: the wait id, and in the low bits what the entry was.
constexpr uint64_t kWaitTag = 0;
constexpr uint64_t kTimeoutTag = 1;
constexpr uint64_t kCancelTag = 2;
constexpr uint64_t kTagBits = 2;

int Setup(unsigned entries, io_uring_params* p) {
  return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
}

int Enter(int fd, unsigned submit, unsigned min_complete, unsigned flags) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, nullptr, 0));
}

int Register(int fd, unsigned op, void* arg, unsigned n) {
  return static_cast<int>(syscall(__NR_io_uring_register, fd, op, arg, n));
}

bool Supports(int fd, const unsigned* ops, size_t n) {
  size_t size = sizeof(io_uring_probe) + 256 * sizeof(io_uring_probe_op);
  std::vector<unsigned char> buf(size, 0);
  auto* probe = reinterpret_cast<io_uring_probe*>(buf.data());
  if (Register(fd, IORING_REGISTER_PROBE, probe, 256) < 0) return false;
  for (size_t i = 0; i < n; ++i) {
    if (ops[i] > probe->last_op || !(probe->ops[ops[i]].flags & IO_URING_OP_SUPPORTED)) return false;
  }
  return true;
}

template <typename T>
T* At(void* base, unsigned offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

}  // namespace

std::unique_ptr<UringWaiter> UringWaiter::Create() {
  io_uring_params p;
  memset(&p, 0, sizeof(p));
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = kCqEntries;
  int fd = Setup(kEntries, &p);
  if (fd < 0) return nullptr;  // ENOSYS, EPERM (io_uring_disabled, seccomp): use the thread
  std::unique_ptr<UringWaiter> w(new UringWaiter());
  w->fd_ = fd;
  const unsigned needed[] = {IORING_OP_FUTEX_WAIT, IORING_OP_LINK_TIMEOUT, IORING_OP_ASYNC_CANCEL};
  if (!(p.features & IORING_FEAT_NODROP) || !Supports(fd, needed, 3)) return nullptr;

  w->sq_ring_size_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  w->cq_ring_size_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  w->sq_ring_ = mmap(nullptr, w->sq_ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (w->sq_ring_ == MAP_FAILED) {
    w->sq_ring_ = nullptr;
    return nullptr;
  }
  w->cq_ring_ = mmap(nullptr, w->cq_ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
  if (w->cq_ring_ == MAP_FAILED) {
    w->cq_ring_ = nullptr;
    return nullptr;
  }
  w->sqes_size_ = p.sq_entries * sizeof(io_uring_sqe);
  void* sqes = mmap(nullptr, w->sqes_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) return nullptr;
  w->sqes_ = static_cast<io_uring_sqe*>(sqes);
  w->sq_head_ = At<unsigned>(w->sq_ring_, p.sq_off.head);
  w->sq_tail_ = At<unsigned>(w->sq_ring_, p.sq_off.tail);
  w->sq_mask_ = At<unsigned>(w->sq_ring_, p.sq_off.ring_mask);
  w->sq_array_ = At<unsigned>(w->sq_ring_, p.sq_off.array);
  w->sq_flags_ = At<unsigned>(w->sq_ring_, p.sq_off.flags);
  w->cq_head_ = At<unsigned>(w->cq_ring_, p.cq_off.head);
  w->cq_tail_ = At<unsigned>(w->cq_ring_, p.cq_off.tail);
  w->cq_mask_ = At<unsigned>(w->cq_ring_, p.cq_off.ring_mask);
  w->cqes_ = At<io_uring_cqe>(w->cq_ring_, p.cq_off.cqes);
  w->pending_tail_ = *w->sq_tail_;
  return w;
}

UringWaiter::~UringWaiter() {
  if (sqes_ != nullptr) munmap(sqes_, sqes_size_);
  if (cq_ring_ != nullptr) munmap(cq_ring_, cq_ring_size_);
  if (sq_ring_ != nullptr) munmap(sq_ring_, sq_ring_size_);
  if (fd_ >= 0) close(fd_);  // the kernel cancels what is still pending
}

// Entries are filled at `pending_tail_` and published by Submit(), all of them at once.
io_uring_sqe* UringWaiter::NextSqe() {
  unsigned index = pending_tail_ & *sq_mask_;
  io_uring_sqe* sqe = &sqes_[index];
  memset(sqe, 0, sizeof(*sqe));
  sq_array_[index] = index;
  pending_tail_++;
  return sqe;
}

void UringWaiter::Submit(unsigned count) {
  __atomic_store_n(sq_tail_, pending_tail_, __ATOMIC_RELEASE);
  while (count > 0) {
    int rc = Enter(fd_, count, 0, 0);
    if (rc < 0) {
      if (errno == EINTR) continue;
      // Take back what the kernel did not consume: a later Submit must not send stale entries
      // (a LINK_TIMEOUT among them would point at a timespec long gone).
      int err = errno;
      pending_tail_ = __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
      __atomic_store_n(sq_tail_, pending_tail_, __ATOMIC_RELEASE);
      throw SysFail{"io_uring_enter", err, {}};
    }
    count -= static_cast<unsigned>(rc);
  }
}

void UringWaiter::Add(uint64_t id, uint32_t* addr, uint32_t expected, int64_t timeout_ms) {
  io_uring_sqe* wait = NextSqe();
  wait->opcode = IORING_OP_FUTEX_WAIT;
  wait->fd = FUTEX2_SIZE_U32;  // shared: the waker is another process
  wait->addr = reinterpret_cast<uintptr_t>(addr);
  wait->off = expected;        // addr2: the value to sleep on
  wait->addr3 = kMatchAny;
  wait->user_data = (id << kTagBits) | kWaitTag;
  if (timeout_ms < 0) {
    Submit(1);
    return;
  }
  wait->flags = IOSQE_IO_LINK;
  // The kernel copies the timespec when it takes the entry, inside Submit(): a local will do.
  __kernel_timespec ts;
  ts.tv_sec = timeout_ms / 1000;
  ts.tv_nsec = (timeout_ms % 1000) * 1000000;
  io_uring_sqe* timeout = NextSqe();
  timeout->opcode = IORING_OP_LINK_TIMEOUT;
  timeout->addr = reinterpret_cast<uintptr_t>(&ts);
  timeout->len = 1;
  timeout->user_data = (id << kTagBits) | kTimeoutTag;
  Submit(2);
}

void UringWaiter::Cancel(uint64_t id) {
  io_uring_sqe* cancel = NextSqe();
  cancel->opcode = IORING_OP_ASYNC_CANCEL;
  cancel->addr = (id << kTagBits) | kWaitTag;
  cancel->user_data = (id << kTagBits) | kCancelTag;
  Submit(1);
}

std::vector<UringWaiter::Completion> UringWaiter::Drain() {
  std::vector<Completion> out;
  for (;;) {
    unsigned head = *cq_head_;
    unsigned tail = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
    for (; head != tail; ++head) {
      const io_uring_cqe& cqe = cqes_[head & *cq_mask_];
      if ((cqe.user_data & ((1u << kTagBits) - 1)) != kWaitTag) continue;
      futex::WaitResult result;
      switch (-cqe.res) {
        case 0: result = futex::kWoken; break;
        case EAGAIN: result = futex::kNotEqual; break;
        case ECANCELED: result = futex::kTimedOut; break;  // the linked timeout (or a cancel) ended it
        case EFAULT: result = futex::kFault; break;
        default: result = futex::kWoken; break;  // callers re-check their word in any case
      }
      out.push_back(Completion{cqe.user_data >> kTagBits, result});
    }
    __atomic_store_n(cq_head_, head, __ATOMIC_RELEASE);
    // Completions beyond the ring wait in the kernel's overflow list: flush them in and go on.
    if (!(__atomic_load_n(sq_flags_, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW)) return out;
    if (Enter(fd_, 0, 0, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR && errno != EBUSY) return out;
  }
}

}  // namespace mp
