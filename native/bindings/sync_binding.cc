// JS boundary of futex.h and waiter.h. The uncontended paths of every lock live in JS (Atomics on
// the shared words); JS calls down here only to sleep or to wake sleepers.
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
  return static_cast<int64_t>(ms);
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

// Runs on the JS thread whenever a waiter thread reports completions.
void DeliverWaits(Napi::Env env) {
  Addon* addon = env.GetInstanceData<Addon>();
  if (addon == nullptr || !addon->waiter || addon->wait_callback.IsEmpty()) return;
  Napi::Function dispatcher = addon->wait_callback.Value();
  for (const Waiter::Completion& c : addon->waiter->Drain()) {
    if (addon->live_waits.erase(c.id) == 0) continue;  // cancelled meanwhile
    dispatcher.Call({Napi::Number::New(env, static_cast<double>(c.id)), Napi::Number::New(env, c.result)});
  }
  addon->UpdateWaitRef(env);
}

// Sets the JS function that receives (id, result). It may be set again (a test runner loads our
// JS afresh per test file, but this addon once per process): the latest one gets the results.
Napi::Value SetWaitCallback(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "setWaitCallback");
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "setWaitCallback: expected a function");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  addon->wait_callback = Napi::Persistent(info[0].As<Napi::Function>());
  if (addon->waiter) return info.Env().Undefined();
  addon->wait_tsfn = Napi::ThreadSafeFunction::New(info.Env(), Napi::Function(), "node-multiprocessing:wait", 0, 1);
  addon->wait_tsfn.Unref(info.Env());
  Napi::ThreadSafeFunction tsfn = addon->wait_tsfn;
  addon->waiter = std::make_unique<Waiter>([tsfn]() mutable {
    tsfn.NonBlockingCall([](Napi::Env env, Napi::Function) {
      // The JS dispatcher never throws: anything that fails in here fails because Node is
      // tearing the environment down, when there is nobody left to tell; escaping, it would
      // terminate the process.
      try {
        DeliverWaits(env);
      } catch (...) {
      }
    });
  });
  // Stop the threads before the environment's teardown destroys the thread-safe function they
  // call (cleanup hooks run last-registered first, so this one runs before the function's own).
  napi_add_env_cleanup_hook(info.Env(), [](void* data) { static_cast<Addon*>(data)->waiter.reset(); }, addon);
  return info.Env().Undefined();
}

Napi::Value FutexWaitAsync(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "futexWaitAsync");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  if (!addon->waiter) throw Napi::Error::New(info.Env(), "futexWaitAsync: no wait callback set");
  uint32_t* word = WordArg(info, 0);
  uint32_t expected = static_cast<uint32_t>(IntArg(info, 2, "expected"));
  uint64_t id = addon->waiter->Add(word, expected, TimeoutMsArg(info, 3));
  addon->live_waits.insert(id);
  addon->UpdateWaitRef(info.Env());
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

Napi::Value FutexCancel(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "futexCancel");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  uint64_t id = static_cast<uint64_t>(IntArg(info, 0, "id"));
  if (addon->waiter && addon->live_waits.erase(id) != 0) {
    addon->waiter->Cancel(id);
    addon->UpdateWaitRef(info.Env());
  }
  return info.Env().Undefined();
}

Napi::Value ProcessGone(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "processGone");
  return Napi::Boolean::New(info.Env(), futex::ProcessGone(static_cast<pid_t>(IntArg(info, 0, "pid"))));
}

}  // namespace

// A pending wait keeps the event loop alive, as a pending read would; no wait, no hold.
void Addon::UpdateWaitRef(Napi::Env env) {
  if (!wait_tsfn) return;
  if (live_waits.empty()) {
    wait_tsfn.Unref(env);
  } else {
    wait_tsfn.Ref(env);
  }
}

void InitSync(Napi::Env env, Napi::Object exports) {
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
  exports.Set("setWaitCallback", Napi::Function::New(env, SetWaitCallback, "setWaitCallback"));
  exports.Set("futexWaitAsync", Napi::Function::New(env, FutexWaitAsync, "futexWaitAsync"));
  exports.Set("futexCancel", Napi::Function::New(env, FutexCancel, "futexCancel"));
  exports.Set("processGone", Napi::Function::New(env, ProcessGone, "processGone"));
}

}  // namespace mp
