#include "waiter.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>
#include <utility>

namespace mp {
namespace {

// futex_waitv(2) takes at most 128 words; one is the shard's control word.
constexpr size_t kWordsPerShard = 127;

void WakePrivate(uint32_t* word) {
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

}  // namespace

struct Waiter::Shard {
  struct Wait {
    uint64_t id;
    uint32_t* addr;
    uint32_t expected;
    int64_t deadline_ns;  // < 0: none
  };

  std::thread thread;
  uint32_t control = 0;
  std::vector<Wait> waits;

  bool HasWord(uint32_t* addr, uint32_t expected) const {
    for (const Wait& w : waits) {
      if (w.addr == addr && w.expected == expected) return true;
    }
    return false;
  }

  size_t DistinctWords() const {
    size_t n = 0;
    for (size_t i = 0; i < waits.size(); ++i) {
      bool seen = false;
      for (size_t j = 0; j < i && !seen; ++j) {
        seen = waits[j].addr == waits[i].addr && waits[j].expected == waits[i].expected;
      }
      if (!seen) ++n;
    }
    return n;
  }

  void Poke() {
    __atomic_add_fetch(&control, 1, __ATOMIC_SEQ_CST);
    WakePrivate(&control);
  }
};

Waiter::Waiter(std::function<void()> notify) : notify_(std::move(notify)) {}

Waiter::~Waiter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& shard : shards_) shard->Poke();
  }
  for (auto& shard : shards_) {
    if (shard->thread.joinable()) shard->thread.join();
  }
}

void Waiter::Add(uint64_t id, uint32_t* addr, uint32_t expected, int64_t timeout_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t deadline = timeout_ms < 0 ? -1 : futex::MonotonicNowNs() + timeout_ms * 1000000;
  Shard* target = nullptr;
  for (auto& shard : shards_) {
    if (shard->HasWord(addr, expected) || shard->DistinctWords() < kWordsPerShard) {
      target = shard.get();
      break;
    }
  }
  if (target == nullptr) {
    shards_.push_back(std::make_unique<Shard>());
    target = shards_.back().get();
    target->thread = std::thread(&Waiter::Run, this, target);
  }
  target->waits.push_back(Shard::Wait{id, addr, expected, deadline});
  target->Poke();
}

void Waiter::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& shard : shards_) {
    auto& waits = shard->waits;
    auto it = std::find_if(waits.begin(), waits.end(), [id](const Shard::Wait& w) { return w.id == id; });
    if (it != waits.end()) {
      waits.erase(it);
      shard->Poke();
      return;
    }
  }
}

std::vector<Waiter::Completion> Waiter::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Completion> out;
  out.swap(done_);
  return out;
}

void Waiter::Run(Shard* shard) {
  std::vector<struct futex_waitv> words;
  for (;;) {
    int64_t deadline = -1;
    uint32_t control_seen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      words.clear();
      control_seen = __atomic_load_n(&shard->control, __ATOMIC_SEQ_CST);
      words.push_back({control_seen, reinterpret_cast<uintptr_t>(&shard->control),
                       FUTEX_32 | FUTEX_PRIVATE_FLAG, 0});
      for (const Shard::Wait& w : shard->waits) {
        bool seen = false;
        for (size_t i = 1; i < words.size() && !seen; ++i) {
          seen = words[i].uaddr == reinterpret_cast<uintptr_t>(w.addr) && words[i].val == w.expected;
        }
        if (!seen) words.push_back({w.expected, reinterpret_cast<uintptr_t>(w.addr), FUTEX_32, 0});
        if (w.deadline_ns >= 0 && (deadline < 0 || w.deadline_ns < deadline)) deadline = w.deadline_ns;
      }
    }

    struct timespec ts;
    if (deadline >= 0) {
      ts.tv_sec = deadline / 1000000000;
      ts.tv_nsec = deadline % 1000000000;
    }
    long rc = syscall(SYS_futex_waitv, words.data(), static_cast<unsigned>(words.size()), 0,
                      deadline >= 0 ? &ts : nullptr, CLOCK_MONOTONIC);
    int err = rc < 0 ? errno : 0;

    bool completed = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      auto finish = [&](auto matches, futex::WaitResult result) {
        auto& waits = shard->waits;
        for (auto it = waits.begin(); it != waits.end();) {
          if (matches(*it)) {
            done_.push_back(Completion{it->id, result});
            it = waits.erase(it);
            completed = true;
          } else {
            ++it;
          }
        }
      };
      if (rc >= 1) {
        const auto& word = words[static_cast<size_t>(rc)];
        finish([&](const Shard::Wait& w) {
          return reinterpret_cast<uintptr_t>(w.addr) == word.uaddr && w.expected == word.val;
        }, futex::kWoken);
      } else if (rc < 0 && (err == EAGAIN || err == EFAULT) &&
                 __atomic_load_n(&shard->control, __ATOMIC_SEQ_CST) == control_seen) {
        // Some word changed (or went away) before we slept: probe each one through the kernel,
        // which never faults on an unmapped word the way reading it here would.
        for (size_t i = 1; i < words.size(); ++i) {
          auto* addr = reinterpret_cast<uint32_t*>(words[i].uaddr);
          uint32_t expected = static_cast<uint32_t>(words[i].val);
          futex::WaitResult probe = futex::Wait(addr, expected, 0);
          if (probe == futex::kTimedOut) continue;  // still equal
          finish([&](const Shard::Wait& w) { return w.addr == addr && w.expected == expected; },
                 probe == futex::kWoken ? futex::kNotEqual : probe);
        }
      }
      int64_t now = futex::MonotonicNowNs();
      finish([&](const Shard::Wait& w) { return w.deadline_ns >= 0 && w.deadline_ns <= now; },
             futex::kTimedOut);
    }
    if (completed) notify_();
  }
}

}  // namespace mp
