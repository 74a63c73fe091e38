// JS boundary of futex.h and waiter.h. The uncontended paths of every lock live in JS (Atomics on
// the shared words); JS calls down here only to sleep or to wake sleepers.
#include <poll.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "../addon.h"
#include "../errors.h"
#include "../futex.h"
#include "args.h"

namespace mp {
namespace {

int64_t TimeoutMsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info[i].IsUndefined() || info[i].IsNull()) return -1;
  double ms = info[i].As<Napi::Number>().DoubleValue();
  if (!(ms >= 0)) return 0;
  if (ms > 9.2e12) return -1;  // ~292 years: for ever
  // Rounded up: the last fraction of a deadline must not become a 0 ms wait, spun in a loop.
  return static_cast<int64_t>(std::ceil(ms));
}

// Poll windows come in ms, fractions included, capped at a second.
int64_t PollNsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) return 0;
  double ms = info[i].As<Napi::Number>().DoubleValue();
  if (!(ms > 0)) return 0;
  return static_cast<int64_t>(std::min(ms, 1000.0) * 1e6);
}

Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "futexWait");
  uint32_t* word = WordArg(info, 0);
  uint32_t expected = static_cast<uint32_t>(IntArg(info, 2, "expected"));
  int64_t timeout_ms = TimeoutMsArg(info, 3);
  try {
    int64_t ns = timeout_ms < 0 ? -1 : timeout_ms * 1000000;
    return Napi::Number::New(info.Env(), futex::Wait(word, expected, ns));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "futexWake");
  uint32_t* word = WordArg(info, 0);
  int64_t count = IntArg(info, 2, "count");
  if (count < 0 || count > INT32_MAX) count = INT32_MAX;
  try {
    return Napi::Number::New(info.Env(), futex::Wake(word, static_cast<int>(count)));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

// Whether a wait ended because its word changed (or may have): the results a claim follows.
bool WordMoved(int result) {
  return result == futex::kWoken || result == futex::kPolled || result == futex::kNotEqual;
}

// Calls fn(args...) through the C API and reports whether it ran. Not through node-addon-api: while a
// worker thread is being terminated the call fails with the termination, which Napi::Error
// cannot wrap (it aborts the whole process). A JS exception is cleared: nobody is there to see it.
bool CallWaiter(napi_env env, const Napi::FunctionReference& fn, size_t argc, const napi_value* args) {
  napi_value function = nullptr;
  napi_value receiver = nullptr;
  napi_value ignored = nullptr;
  if (napi_get_reference_value(env, fn, &function) != napi_ok || function == nullptr) return false;
  if (napi_get_undefined(env, &receiver) != napi_ok) return false;
  if (napi_call_function(env, receiver, function, argc, args, &ignored) == napi_ok) return true;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exception = nullptr;
    napi_get_and_clear_last_exception(env, &exception);
  }
  return false;
}

// Makes a wait's claim, if its word has moved and the claim is allowed now: true with the value
// its call resolves with (true; a ring take's message).
bool MakeClaim(napi_env env, LiveWait& wait, int result, napi_value* value, uint32_t* ring_pos) {
  if (!WordMoved(result)) return false;
  if (wait.ring.base != nullptr) return TryRingGet(env, wait.ring, value, ring_pos);
  if (!futex::TryClaim(wait.claim)) return false;
  if (napi_get_boolean(env, true, value) == napi_ok) return true;
  futex::UndoClaim(wait.claim);
  return false;
}

// Runs on the JS thread whenever completions are ready. A wait with a claim gets it made here,
// right before its waiter is told, never earlier: a wait cancelled meanwhile claims nothing. A
// claim made while polling resolves the waiter's promise through its own resolve function, with
// no JS of ours in between, and records that hit in the wait's budget. A claim whose waiter could
// not be told (the environment is going away) is undone; a ring take's message, already made
// into a value, is abandoned to the ring's next consumer instead.
// The waits told are moved to `told_waits`, for the caller to free once the microtasks their calls
// queued have run: deleting their references is not what the awaiting caller should wait for.
void DeliverWaits(Napi::Env env, std::vector<Waiter::Completion> done, std::vector<LiveWait>& told_waits) {
  Addon* addon = env.GetInstanceData<Addon>();
  if (addon == nullptr) return;
  for (const Waiter::Completion& c : done) {
    auto live = addon->live_waits.find(c.id);
    if (live == addon->live_waits.end()) continue;  // cancelled meanwhile
    told_waits.push_back(std::move(live->second));
    LiveWait& wait = told_waits.back();
    addon->live_waits.erase(live);
    int result = c.result;
    napi_value value = nullptr;
    uint32_t ring_pos = 0;
    bool claimed = false;
    try {
      claimed = MakeClaim(env, wait, result, &value, &ring_pos);
    } catch (const SysFail&) {  // an undo's wake refused: nothing made
    }
    if (claimed) result |= futex::kClaimed;
    // One failing call must not lose the completions after it (their promises would hang).
    bool told;
    if (claimed && c.result == futex::kPolled && !wait.resolve.IsEmpty()) {
      if (wait.backoff != nullptr) *wait.backoff = 1;  // a hit, as SpinBudget.hit() records it
      told = CallWaiter(env, wait.resolve, 1, &value);
    } else {
      napi_value args[2] = {nullptr, value};
      told = napi_create_int32(env, result, &args[0]) == napi_ok && CallWaiter(env, wait.done, claimed ? 2 : 1, args);
    }
    if (!claimed) continue;
    try {
      if (wait.ring.base != nullptr) {
        if (told) FinishRingGet(wait.ring, ring_pos);
        else AbandonRingGet(wait.ring, ring_pos);
      } else if (!told) {
        futex::UndoClaim(wait.claim);
      }
    } catch (const SysFail&) {
    }
  }
  addon->UpdateWaitRef(env);
}

}  // namespace

// The io_uring waiter and the event-loop handle that watches its fd. It outlives the Addon's
// use of it: the environment's async cleanup hook closes the handle, and the close callback
// frees both.
struct UringPoll {
  uv_poll_t handle;
  napi_env env;
  std::unique_ptr<UringWaiter> waiter;
  std::unique_ptr<Napi::AsyncContext> context;
  napi_async_cleanup_hook_handle cleanup = nullptr;
};

namespace {

// Hands completions to JS from an event-loop callback, inside a callback scope, so that the
// promises resolved run their reactions before we return. Our waiters' callbacks never throw:
// anything failing here fails because Node is tearing the environment down, with nobody to tell.
void DeliverInScope(Napi::Env env, Napi::AsyncContext& context, std::vector<Waiter::Completion> done) {
  std::vector<LiveWait> told_waits;
  {
    Napi::HandleScope scope(env);
    Napi::CallbackScope callback(env, context);
    try {
      DeliverWaits(env, std::move(done), told_waits);
    } catch (...) {
    }
  }  // the microtask checkpoint: the awaiting callers resume here
}

// The environment's async cleanup hook for a loop handle it owns (UringPoll, WaitPoll): the
// Addon forgets it, uv_close stops it, and the close callback frees it (closing a UringPoll's
// ring makes the kernel drop the waits still pending).
template <typename Owner>
void CloseOwned(Owner* owner, Owner* Addon::*slot) {
  Addon* addon = Napi::Env(owner->env).GetInstanceData<Addon>();
  if (addon != nullptr) addon->*slot = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&owner->handle), [](uv_handle_t* h) {
    auto* closed = static_cast<Owner*>(h->data);
    napi_remove_async_cleanup_hook(closed->cleanup);
    delete closed;
  });
}

void OnUringReadable(uv_poll_t* handle, int status, int events) {
  auto* up = static_cast<UringPoll*>(handle->data);
  DeliverInScope(Napi::Env(up->env), *up->context, up->waiter->Drain());
}

void CloseUring(napi_async_cleanup_hook_handle hook, void* data) {
  CloseOwned(static_cast<UringPoll*>(data), &Addon::uring);
}

// io_uring with its fd polled by this environment's event loop, or null where the kernel (or a
// seccomp filter, or NMP_NO_IO_URING=1) says no.
UringPoll* StartUring(Napi::Env env) {
  const char* off = getenv("NMP_NO_IO_URING");
  if (off != nullptr && off[0] != '\0' && off[0] != '0') return nullptr;
  std::unique_ptr<UringWaiter> waiter = UringWaiter::Create();
  if (!waiter) return nullptr;
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) return nullptr;
  auto* up = new UringPoll();
  up->env = env;
  up->handle.data = up;
  if (uv_poll_init(loop, &up->handle, waiter->fd()) != 0) {
    delete up;
    return nullptr;
  }
  up->waiter = std::move(waiter);
  up->context = std::make_unique<Napi::AsyncContext>(env, "node-multiprocessing:wait");
  uv_poll_start(&up->handle, UV_READABLE, OnUringReadable);
  uv_unref(reinterpret_cast<uv_handle_t*>(&up->handle));
  napi_add_async_cleanup_hook(env, CloseUring, up, &up->cleanup);
  return up;
}

// Starts the kernel's side of wait `id`: an io_uring request, or a waiter thread's.
void ArmWait(Addon* addon, uint64_t id, uint32_t* word, uint32_t expected, int64_t timeout_ms) {
  if (addon->uring != nullptr) addon->uring->waiter->Add(id, word, expected, timeout_ms);
  else addon->waiter->Add(id, word, expected, timeout_ms);
}

}  // namespace

// Waits that poll their word between event-loop turns for a short window before they sleep. A
// wake from another process costs a sleeping core a halt exit and a cold cache, tens of µs on a
// VM; a loop that is still turning sees the word change within one turn. While any wait polls,
// the idle handle keeps the loop from blocking (I/O and timers still run); a wait whose window
// runs out is handed to the kernel exactly as if it had been asked to sleep late, which every
// futex protocol must already allow.
// How long one turn of the event loop may poll before it lets the loop go on (see OnPollTurn).
constexpr uint64_t kPollSliceNs = 20000;
// How often a slice looks whether the loop has I/O to serve (a poll() of its epoll fd).
constexpr uint64_t kIoCheckNs = 500;

struct WaitPoll {
  struct Entry {
    uint64_t id;
    uint32_t* word;
    uint32_t expected;
    uint64_t started_ns;     // uv_hrtime() clock
    uint64_t poll_until_ns;
    int64_t deadline_ns;     // -1: none
    uint64_t stalled_ns;     // of its wall time, the part spent in gaps between turns
    bool faulted;            // its mapping went away
  };
  uv_idle_t handle;
  uint64_t last_turn_ns = 0;
  napi_env env;
  std::unique_ptr<Napi::AsyncContext> context;
  napi_async_cleanup_hook_handle cleanup = nullptr;
  std::vector<Entry> entries;
};

namespace {

// One look at every entry: the changed, faulted and timed-out ones go to `done`, the ones whose
// window ran out to the kernel; the rest stay.
void PollPass(WaitPoll* wp, Addon* addon, uint64_t now, std::vector<Waiter::Completion>& done) {
  size_t keep = 0;
  for (size_t i = 0; i < wp->entries.size(); ++i) {
    const WaitPoll::Entry& e = wp->entries[i];
    if (e.faulted) {
      done.push_back({e.id, futex::kFault});
      continue;
    }
    if (__atomic_load_n(e.word, __ATOMIC_ACQUIRE) != e.expected) {
      // A change seen while other work was preempting this thread is not a win to repeat:
      // reported as a plain wake, it counts against polling this word next time.
      uint64_t wall = now - e.started_ns;
      bool contended = futex::WasContended(wall, wall - std::min(wall, e.stalled_ns));
      done.push_back({e.id, contended ? futex::kWoken : futex::kPolled});
      continue;
    }
    if (e.deadline_ns >= 0 && now >= static_cast<uint64_t>(e.deadline_ns)) {
      done.push_back({e.id, futex::kTimedOut});
      continue;
    }
    if (now >= e.poll_until_ns) {
      int64_t left_ms = e.deadline_ns < 0 ? -1 : static_cast<int64_t>(std::ceil((e.deadline_ns - now) / 1e6));
      try {
        ArmWait(addon, e.id, e.word, e.expected, left_ms);
      } catch (const SysFail&) {
        done.push_back({e.id, futex::kWoken});  // spurious: the caller looks at its word again
      }
      continue;
    }
    wp->entries[keep++] = e;
  }
  wp->entries.resize(keep);
}

// Between two turns the loop takes about a microsecond, and two looks within a turn far less: a
// longer gap is time this thread was away (preempted, or running other work), charged to every
// entry that was waiting through it.
void ChargeStall(WaitPoll* wp, uint64_t before, uint64_t now) {
  uint64_t gap = now - before;
  if (gap <= futex::kStallAfterNs) return;
  for (WaitPoll::Entry& e : wp->entries) {
    // An entry added during the gap (by a callback) is charged the part it was there for.
    e.stalled_ns += now - std::max(before, std::min(e.started_ns, now));
  }
}

// Whether the loop has other work that wants it to keep turning: another active idle handle
// (Node keeps one while setImmediate callbacks are queued).
bool OtherIdleWork(uv_loop_t* loop, uv_idle_t* ours) {
  struct Seen {
    uv_handle_t* ours;
    bool found;
  } seen{reinterpret_cast<uv_handle_t*>(ours), false};
  uv_walk(loop, [](uv_handle_t* h, void* arg) {
    auto* s = static_cast<Seen*>(arg);
    if (h != s->ours && uv_handle_get_type(h) == UV_IDLE && uv_is_active(h)) s->found = true;
  }, &seen);
  return seen.found;
}

// Whether any fd the loop watches is ready: a slice ends for it.
bool IoReady(uv_loop_t* loop) {
  struct pollfd p{uv_backend_fd(loop), POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

void OnPollTurn(uv_idle_t* handle) {
  auto* wp = static_cast<WaitPoll*>(handle->data);
  Napi::Env env(wp->env);
  Addon* addon = env.GetInstanceData<Addon>();
  if (addon == nullptr) return;
  uint64_t now = uv_hrtime();
  ChargeStall(wp, wp->last_turn_ns, now);
  // When the loop has nothing else to do, a turn polls for up to kPollSliceNs before it lets the
  // loop turn again. A turn of Node's loop is not free: its check phase makes a JS object every
  // time, and a loop turned a million times a second by a poll made V8 scavenge every 13 ms,
  // each scavenge a 0.1-0.4 ms hole in the polling (the slowest 5% of wake-ups). A slice ends as
  // soon as an fd the loop watches is ready (I/O, a signal, another thread's uv_async), and is
  // not taken while setImmediate callbacks are queued: other work waits a few µs at most, and a
  // due timer 20. Nothing can unmap a word meanwhile: that happens on this thread.
  uint64_t slice_end = OtherIdleWork(handle->loop, handle) ? now : now + kPollSliceNs;
  uint64_t next_io_check = now + kIoCheckNs;
  std::vector<Waiter::Completion> done;
  for (;;) {
    PollPass(wp, addon, now, done);
    if (!done.empty() || wp->entries.empty()) break;
    uint64_t before = now;
    now = uv_hrtime();
    ChargeStall(wp, before, now);
    if (now >= slice_end) break;
    if (now >= next_io_check) {
      if (IoReady(handle->loop)) break;
      next_io_check = now + kIoCheckNs;
    }
  }
  wp->last_turn_ns = now;
  if (wp->entries.empty()) uv_idle_stop(&wp->handle);
  if (!done.empty()) DeliverInScope(env, *wp->context, std::move(done));
}

void ClosePoll(napi_async_cleanup_hook_handle hook, void* data) {
  CloseOwned(static_cast<WaitPoll*>(data), &Addon::poll);
}

WaitPoll* EnsurePoll(Napi::Env env, Addon* addon) {
  if (addon->poll != nullptr) return addon->poll;
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) return nullptr;
  auto* wp = new WaitPoll();
  wp->env = env;
  wp->handle.data = wp;
  if (uv_idle_init(loop, &wp->handle) != 0) {
    delete wp;
    return nullptr;
  }
  wp->context = std::make_unique<Napi::AsyncContext>(env, "node-multiprocessing:wait");
  napi_add_async_cleanup_hook(env, ClosePoll, wp, &wp->cleanup);
  addon->poll = wp;
  return wp;
}

// Starts what serves this environment's async waits, at its first one: io_uring, else a waiter
// thread reporting through a thread-safe function.
void StartWaitBackend(Napi::Env env, Addon* addon) {
  if (addon->uring != nullptr || addon->waiter) return;
  addon->uring = StartUring(env);
  if (addon->uring != nullptr) return;
  addon->wait_tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "node-multiprocessing:wait", 0, 1);
  addon->wait_tsfn.Unref(env);
  Napi::ThreadSafeFunction tsfn = addon->wait_tsfn;
  addon->waiter = std::make_unique<Waiter>([tsfn]() mutable {
    tsfn.NonBlockingCall([](Napi::Env env, Napi::Function) {
      try {
        Addon* a = env.GetInstanceData<Addon>();
        std::vector<LiveWait> told_waits;
        if (a != nullptr && a->waiter) DeliverWaits(env, a->waiter->Drain(), told_waits);
      } catch (...) {
      }
    });
  });
  // Stop the threads before the environment's teardown destroys the thread-safe function they
  // call (cleanup hooks run last-registered first, so this one runs before the function's own).
  napi_add_env_cleanup_hook(env, [](void* data) { static_cast<Addon*>(data)->waiter.reset(); }, addon);
}

// futexWaitAsync's claim kind for a get on a message ring: its buffer is the ring's segment, its
// value the taker's lock owner id and its mark value the taker's start time (ring::Self).
constexpr int64_t kRingGetClaim = 4;

// The optional claim of futexWaitAsync: kind, value, mark byteOffset (in the same buffer), mark
// value, from argument `i` on, into `live`; with none, a Claim of kind kNone that still names the
// wait's word.
void ClaimArgs(const Napi::CallbackInfo& info, size_t i, uint32_t* word, LiveWait& live) {
  futex::Claim& claim = live.claim;
  claim.word = word;
  if (info.Length() <= i || info[i].IsUndefined()) return;
  RequireArgs(info, i + 4, "futexWaitAsync claim");
  int64_t kind = IntArg(info, i, "claim kind");
  if (kind < futex::Claim::kTake || kind > kRingGetClaim) {
    throw Napi::RangeError::New(info.Env(), "claim kind must be 1 (take), 2 (seen), 3 (count) or 4 (ring take)");
  }
  auto value = static_cast<uint32_t>(IntArg(info, i + 1, "claim value"));
  uint32_t* mark = WordArg(info, 0, i + 2);
  auto mark_value = static_cast<uint32_t>(IntArg(info, i + 3, "claim mark value"));
  if (kind == kRingGetClaim) {
    Napi::ArrayBuffer segment = info[0].As<Napi::ArrayBuffer>();  // WordArg checked it
    live.ring.base = segment.Data();
    live.ring.size = segment.ByteLength();
    live.ring.self = ring::Self{value, mark_value, static_cast<uint32_t>(getpid())};
    if (!ring::View(live.ring.base, live.ring.size).valid()) throw Napi::RangeError::New(info.Env(), "futexWaitAsync: a ring take needs a ring segment");
    return;
  }
  claim.kind = static_cast<futex::Claim::Kind>(kind);
  claim.value = value;
  claim.mark = mark;
  claim.mark_value = mark_value;
}

// futexWaitAsync(buffer, byteOffset, expected, timeoutMs, pollMs, done, claim..., resolve?) -> id;
// `done` is called with the result. pollMs > 0 polls the word on the event loop that long before
// sleeping. A claim (ClaimArgs) is made when the word has moved, right before `done` is called,
// or, for a claim made while polling, `resolve` with true instead.
Napi::Value FutexWaitAsync(const Napi::CallbackInfo& info) {
  RequireArgs(info, 6, "futexWaitAsync");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  uint32_t* word = WordArg(info, 0);
  uint32_t expected = static_cast<uint32_t>(IntArg(info, 2, "expected"));
  int64_t timeout_ms = TimeoutMsArg(info, 3);
  int64_t poll_ns = PollNsArg(info, 4);
  if (!info[5].IsFunction()) throw Napi::TypeError::New(info.Env(), "futexWaitAsync: done must be a function");
  LiveWait live;
  ClaimArgs(info, 6, word, live);
  if (info.Length() > 10 && info[10].IsFunction()) {
    if (live.claim.kind == futex::Claim::kNone && live.ring.base == nullptr) {
      throw Napi::TypeError::New(info.Env(), "futexWaitAsync: resolve needs a claim");
    }
    live.resolve = Napi::Persistent(info[10].As<Napi::Function>());
    if (info.Length() > 11 && !info[11].IsUndefined()) {
      if (!info[11].IsTypedArray() || info[11].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
          info[11].As<Napi::TypedArray>().ElementLength() < 2) {
        throw Napi::TypeError::New(info.Env(), "futexWaitAsync: budgetState must be an Int32Array of 2");
      }
      Napi::Int32Array state = info[11].As<Napi::Int32Array>();
      live.backoff = state.Data() + 1;
      live.budget = Napi::Persistent(state.As<Napi::Object>());
    }
  }
  live.done = Napi::Persistent(info[5].As<Napi::Function>());
  StartWaitBackend(info.Env(), addon);
  uint64_t id = addon->next_wait_id++;
  WaitPoll* wp = poll_ns > 0 && timeout_ms != 0 ? EnsurePoll(info.Env(), addon) : nullptr;
  if (wp != nullptr) {
    uint64_t now = uv_hrtime();
    uint64_t window = static_cast<uint64_t>(poll_ns);
    int64_t deadline = timeout_ms < 0 ? -1 : static_cast<int64_t>(now) + timeout_ms * 1000000;
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&wp->handle))) wp->last_turn_ns = now;
    wp->entries.push_back({id, word, expected, now, now + window, deadline, 0, false});
    uv_idle_start(&wp->handle, OnPollTurn);
  } else {
    try {
      ArmWait(addon, id, word, expected, timeout_ms);
    } catch (const SysFail& f) {
      ThrowSysFail(info.Env(), f);
    }
  }
  addon->live_waits.emplace(id, std::move(live));
  addon->UpdateWaitRef(info.Env());
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

Napi::Value FutexCancel(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "futexCancel");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  uint64_t id = static_cast<uint64_t>(IntArg(info, 0, "id"));
  auto live = addon->live_waits.find(id);
  if (live != addon->live_waits.end()) {
    uint32_t* word = live->second.claim.word;
    addon->live_waits.erase(live);
    if (addon->poll != nullptr) {
      auto& entries = addon->poll->entries;
      auto it = std::find_if(entries.begin(), entries.end(), [id](const WaitPoll::Entry& e) { return e.id == id; });
      if (it != entries.end()) {
        entries.erase(it);
        if (entries.empty()) uv_idle_stop(&addon->poll->handle);
        addon->UpdateWaitRef(info.Env());
        return info.Env().Undefined();
      }
    }
    try {
      if (addon->uring != nullptr) addon->uring->waiter->Cancel(id);
      else if (addon->waiter) addon->waiter->Cancel(id);
      // The kernel may have woken this wait already, its completion not yet delivered: that wake
      // was meant for some waiter on the word, so it is passed on (a semaphore's other waiter
      // slept for ever without it). A wake nobody needed is one more look at a word.
      if (word != nullptr) futex::Wake(word, 1);
    } catch (const SysFail& f) {
      ThrowSysFail(info.Env(), f);
    }
    addon->UpdateWaitRef(info.Env());
  }
  return info.Env().Undefined();
}

// 'io_uring' or 'thread': how async waits are served here (for the bench and the tests).
Napi::Value WaitBackend(const Napi::CallbackInfo& info) {
  Addon* addon = info.Env().GetInstanceData<Addon>();
  if (addon->uring != nullptr) return Napi::String::New(info.Env(), "io_uring");
  return addon->waiter ? Napi::String::New(info.Env(), "thread") : info.Env().Undefined();
}

Napi::Value ProcessGone(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "processGone");
  auto pid = static_cast<pid_t>(IntArg(info, 0, "pid"));
  // The start time as an Int32Array holds it: its low 32 bits, signed.
  uint32_t start = info.Length() > 1 ? static_cast<uint32_t>(IntArg(info, 1, "start")) : 0;
  return Napi::Boolean::New(info.Env(), futex::ProcessGone(pid, start));
}

}  // namespace

// A pending wait keeps the event loop alive, as a pending read would; no wait, no hold.
void Addon::UpdateWaitRef(Napi::Env env) {
  if (uring != nullptr) {
    auto* handle = reinterpret_cast<uv_handle_t*>(&uring->handle);
    if (live_waits.empty()) uv_unref(handle); else uv_ref(handle);
    return;
  }
  if (!wait_tsfn) return;
  if (live_waits.empty()) {
    wait_tsfn.Unref(env);
  } else {
    wait_tsfn.Ref(env);
  }
}

void Addon::DropPolledWaits(void* addr, size_t size) {
  auto* begin = static_cast<char*>(addr);
  auto inside = [begin, size](const uint32_t* word) {
    auto* at = reinterpret_cast<const char*>(word);
    return at >= begin && at < begin + size;
  };
  for (auto& [id, wait] : live_waits) {
    if (wait.claim.word == nullptr || !inside(wait.claim.word)) continue;
    wait.claim = futex::Claim{};  // no claim, and no word to pass a wake on to
    wait.ring = RingGet{};
  }
  if (poll == nullptr) return;
  for (WaitPoll::Entry& e : poll->entries) {
    if (inside(e.word)) e.faulted = true;  // reported on the next turn
  }
}

void InitSync(Napi::Env env, Napi::Object exports) {
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
  exports.Set("futexWaitAsync", Napi::Function::New(env, FutexWaitAsync, "futexWaitAsync"));
  exports.Set("futexCancel", Napi::Function::New(env, FutexCancel, "futexCancel"));
  exports.Set("waitBackend", Napi::Function::New(env, WaitBackend, "waitBackend"));
  exports.Set("processGone", Napi::Function::New(env, ProcessGone, "processGone"));
}

}  // namespace mp
