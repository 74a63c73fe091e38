// JS boundary of spawn.h and tracker.h.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../addon.h"
#include "../errors.h"
#include "../spawn.h"
#include "../tracker.h"
#include "args.h"

namespace mp {
namespace {

std::vector<std::string> StringList(Napi::Env env, Napi::Value value, const char* what) {
  if (!value.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    if (!item.IsString()) throw Napi::TypeError::New(env, std::string(what) + " must hold strings");
    out.push_back(item.As<Napi::String>().Utf8Value());
  }
  return out;
}

std::vector<int> IntList(Napi::Env env, Napi::Value value, const char* what) {
  std::vector<int> out;
  if (value.IsUndefined() || value.IsNull()) return out;
  if (!value.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array");
  Napi::Array array = value.As<Napi::Array>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    if (!item.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must hold numbers");
    out.push_back(item.As<Napi::Number>().Int32Value());
  }
  return out;
}

// Must run on the main thread: the kernel ties PR_SET_PDEATHSIG to the thread that forked.
Napi::Value Spawn(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "spawn");
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  spawn::Options options;
  options.file = o.Get("file").As<Napi::String>().Utf8Value();
  options.argv = StringList(env, o.Get("argv"), "argv");
  options.env = StringList(env, o.Get("env"), "env");
  Napi::Value cwd = o.Get("cwd");
  if (cwd.IsString()) options.cwd = cwd.As<Napi::String>().Utf8Value();
  options.cpus = IntList(env, o.Get("cpus"), "cpus");
  options.pass_fds = IntList(env, o.Get("passFds"), "passFds");
  try {
    spawn::Spawned s = spawn::Spawn(options);
    Napi::Object out = Napi::Object::New(env);
    out.Set("pid", s.pid);
    out.Set("pidfd", s.pidfd);
    return out;
  } catch (const SysFail& f) {
    ThrowSysFail(env, f);
  }
}

Napi::Value SetAffinity(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "setAffinity");
  try {
    spawn::SetAffinity(static_cast<pid_t>(IntArg(info, 0, "pid")), IntList(info.Env(), info[1], "cpus"));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
  return info.Env().Undefined();
}

Napi::Value TryReap(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "tryReap");
  Napi::Env env = info.Env();
  try {
    spawn::ExitStatus s = spawn::TryReap(static_cast<pid_t>(IntArg(info, 0, "pid")));
    if (!s.exited) return env.Null();
    Napi::Object out = Napi::Object::New(env);
    out.Set("exitCode", s.code);
    out.Set("userCPUTime", static_cast<double>(s.user_us));
    out.Set("systemCPUTime", static_cast<double>(s.system_us));
    out.Set("maxRSS", static_cast<double>(s.max_rss_kib));
    return out;
  } catch (const SysFail& f) {
    ThrowSysFail(env, f);
  }
}

Napi::Value WaitExit(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "waitExit");
  try {
    bool exited = spawn::WaitExit(static_cast<int>(IntArg(info, 0, "pidfd")),
                                  static_cast<int>(IntArg(info, 1, "timeoutMs")));
    return Napi::Boolean::New(info.Env(), exited);
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

void DeliverExits(Napi::Env env) {
  Addon* addon = env.GetInstanceData<Addon>();
  if (addon == nullptr || !addon->exit_watcher || addon->exit_callback.IsEmpty()) return;
  Napi::Function dispatcher = addon->exit_callback.Value();
  for (int pidfd : addon->exit_watcher->Drain()) {
    if (addon->watched_exits.erase(pidfd) == 0) continue;
    dispatcher.Call({Napi::Number::New(env, pidfd)});
  }
  addon->UpdateExitRef(env);
}

// The latest function set receives the pidfds of exited children (a test runner may load our JS
// afresh per test file, but this addon once per process).
Napi::Value SetExitCallback(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "setExitCallback");
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "setExitCallback: expected a function");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  addon->exit_callback = Napi::Persistent(info[0].As<Napi::Function>());
  if (addon->exit_watcher) return info.Env().Undefined();
  addon->exit_tsfn = Napi::ThreadSafeFunction::New(info.Env(), Napi::Function(), "node-multiprocessing:exit", 0, 1);
  addon->exit_tsfn.Unref(info.Env());
  Napi::ThreadSafeFunction tsfn = addon->exit_tsfn;
  try {
    addon->exit_watcher = std::make_unique<spawn::ExitWatcher>([tsfn]() mutable {
      tsfn.NonBlockingCall([](Napi::Env env, Napi::Function) {
        // As in DeliverWaits: only a torn-down environment makes this fail.
        try {
          DeliverExits(env);
        } catch (...) {
        }
      });
    });
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
  // A child that exits while Node tears this environment down must not reach a destroyed
  // thread-safe function: stop the watcher first (cleanup hooks run last-registered first).
  napi_add_env_cleanup_hook(info.Env(), [](void* data) { static_cast<Addon*>(data)->exit_watcher.reset(); }, addon);
  return info.Env().Undefined();
}

// watchExit(pidfd, keepAlive): a non-daemon child keeps the event loop alive until it exits.
// Called again for the same pidfd, it only changes keepAlive.
Napi::Value WatchExit(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "watchExit");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  if (!addon->exit_watcher) throw Napi::Error::New(info.Env(), "watchExit: no exit callback set");
  int pidfd = static_cast<int>(IntArg(info, 0, "pidfd"));
  bool already = addon->watched_exits.count(pidfd) != 0;
  addon->watched_exits[pidfd] = info[1].ToBoolean().Value();
  if (!already) addon->exit_watcher->Watch(pidfd);
  addon->UpdateExitRef(info.Env());
  return info.Env().Undefined();
}

Napi::Value UnwatchExit(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "unwatchExit");
  Addon* addon = info.Env().GetInstanceData<Addon>();
  int pidfd = static_cast<int>(IntArg(info, 0, "pidfd"));
  if (addon->exit_watcher && addon->watched_exits.erase(pidfd) != 0) {
    addon->exit_watcher->Unwatch(pidfd);
    addon->UpdateExitRef(info.Env());
  }
  return info.Env().Undefined();
}

Napi::Value StartTracker(const Napi::CallbackInfo& info) {
  try {
    tracker::Started s = tracker::Start();
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("fd", s.write_fd);
    out.Set("pid", s.pid);
    return out;
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

// trackerDeposit(sock, dev, ino, fd)
Napi::Value TrackerDeposit(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "trackerDeposit");
  int sock = static_cast<int>(IntArg(info, 0, "sock"));
  auto dev = static_cast<uint64_t>(IntArg(info, 1, "dev"));
  auto ino = static_cast<uint64_t>(IntArg(info, 2, "ino"));
  int fd = static_cast<int>(IntArg(info, 3, "fd"));
  try {
    tracker::Deposit(sock, dev, ino, fd);
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
  return info.Env().Undefined();
}

// isTrackerSocket(fd): the tracker's socket is a SOCK_SEQPACKET Unix socket. An inherited one is
// made close-on-exec here, so that a program this process execs does not hold the tree open.
Napi::Value IsTrackerSocket(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "isTrackerSocket");
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  int type = 0;
  socklen_t len = sizeof type;
  bool ok = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET;
  if (ok) fcntl(fd, F_SETFD, FD_CLOEXEC);
  return Napi::Boolean::New(info.Env(), ok);
}

// trackerWithdraw(sock, dev, ino, wantFd) -> a new fd, or -1
Napi::Value TrackerWithdraw(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "trackerWithdraw");
  int sock = static_cast<int>(IntArg(info, 0, "sock"));
  auto dev = static_cast<uint64_t>(IntArg(info, 1, "dev"));
  auto ino = static_cast<uint64_t>(IntArg(info, 2, "ino"));
  bool want = info[3].ToBoolean().Value();
  try {
    // The tracker answers at once; 5 s bounds a tracker that was stopped.
    return Napi::Number::New(info.Env(), tracker::Withdraw(sock, dev, ino, want, 5000));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

// A connected pair of Unix stream sockets, both close-on-exec: the parent<->child channel.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    ThrowSystemError(info.Env(), "socketpair", errno);
  }
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  out.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return out;
}

}  // namespace

void Addon::UpdateExitRef(Napi::Env env) {
  if (!exit_tsfn) return;
  bool keep_alive = false;
  for (const auto& entry : watched_exits) keep_alive = keep_alive || entry.second;
  if (keep_alive) {
    exit_tsfn.Ref(env);
  } else {
    exit_tsfn.Unref(env);
  }
}

void InitProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn"));
  exports.Set("tryReap", Napi::Function::New(env, TryReap, "tryReap"));
  exports.Set("setAffinity", Napi::Function::New(env, SetAffinity, "setAffinity"));
  exports.Set("waitExit", Napi::Function::New(env, WaitExit, "waitExit"));
  exports.Set("setExitCallback", Napi::Function::New(env, SetExitCallback, "setExitCallback"));
  exports.Set("watchExit", Napi::Function::New(env, WatchExit, "watchExit"));
  exports.Set("unwatchExit", Napi::Function::New(env, UnwatchExit, "unwatchExit"));
  exports.Set("startTracker", Napi::Function::New(env, StartTracker, "startTracker"));
  exports.Set("trackerDeposit", Napi::Function::New(env, TrackerDeposit, "trackerDeposit"));
  exports.Set("isTrackerSocket", Napi::Function::New(env, IsTrackerSocket, "isTrackerSocket"));
  exports.Set("trackerWithdraw", Napi::Function::New(env, TrackerWithdraw, "trackerWithdraw"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
}

}  // namespace mp
