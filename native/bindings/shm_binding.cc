// JS boundary of shm.h: fds as numbers, mappings as external ArrayBuffers.
#include "../shm.h"

#include "../addon.h"
#include "../errors.h"
#include "args.h"

namespace mp {
namespace {

// munmap when the ArrayBuffer is collected, unless unmap() already did.
void FinalizeMapping(Napi::Env env, void* data, Mapping* mapping) {
  Addon* addon = env.GetInstanceData<Addon>();
  if (mapping->mapped) {
    if (addon != nullptr) addon->DropPolledWaits(mapping->addr, mapping->size);
    shm::Unmap(mapping->addr, mapping->size);
    if (addon != nullptr) {
      addon->mappings.erase(mapping->addr);
      Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(mapping->size));
    }
  }
  delete mapping;
}

size_t SizeArg(const Napi::CallbackInfo& info, size_t i) {
  int64_t size = IntArg(info, i, "size");
  if (size < 0) throw Napi::RangeError::New(info.Env(), "size must not be negative");
  return static_cast<size_t>(size);
}

Napi::Value CreateAnonymous(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "createAnonymous");
  try {
    return Napi::Number::New(info.Env(), shm::CreateAnonymous(SizeArg(info, 0)));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

Napi::Value CreateNamed(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "createNamed");
  try {
    return Napi::Number::New(info.Env(), shm::CreateNamed(StringArg(info, 0, "name"), SizeArg(info, 1)));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

Napi::Value OpenNamed(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "openNamed");
  try {
    return Napi::Number::New(info.Env(), shm::OpenNamed(StringArg(info, 0, "name")));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

Napi::Value OpenFromProcess(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "openFromProcess");
  try {
    int fd = shm::OpenFromProcess(static_cast<pid_t>(IntArg(info, 0, "pid")),
                                  static_cast<int>(IntArg(info, 1, "fd")),
                                  static_cast<uint64_t>(IntArg(info, 2, "dev")),
                                  static_cast<uint64_t>(IntArg(info, 3, "ino")));
    return Napi::Number::New(info.Env(), fd);
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

Napi::Value CheckOwnFd(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "checkOwnFd");
  int fd = shm::CheckOwnFd(static_cast<int>(IntArg(info, 0, "fd")),
                           static_cast<uint64_t>(IntArg(info, 1, "dev")),
                           static_cast<uint64_t>(IntArg(info, 2, "ino")));
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Identify(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "identify");
  try {
    shm::FileId id = shm::Identify(static_cast<int>(IntArg(info, 0, "fd")));
    Napi::Array out = Napi::Array::New(info.Env(), 3);
    out.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(id.dev)));
    out.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(id.ino)));
    out.Set(2u, Napi::Number::New(info.Env(), static_cast<double>(id.size)));
    return out;
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
}

Napi::Value Map(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "map");
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  size_t size = SizeArg(info, 1);
  bool populate = info.Length() > 2 && info[2].ToBoolean().Value();
  void* addr;
  try {
    // Never map past the end of the file: touching those pages would be SIGBUS, not an error.
    shm::FileId id = shm::Identify(fd);
    if (id.size < size) throw SysFail{"mmap", EINVAL, ""};
    addr = shm::Map(fd, size, populate);
  } catch (const SysFail& f) {
    ThrowSysFail(env, f);
  }
  auto* mapping = new Mapping{addr, size, true};
  env.GetInstanceData<Addon>()->mappings[addr] = mapping;
  // The collector cannot see mapped bytes: tell it, so that objects dropped without close() in a
  // loop are collected before their descriptors and mappings run out.
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(size));
  return Napi::ArrayBuffer::New(env, addr, size, FinalizeMapping, mapping);
}

// Detaches the ArrayBuffer (so JS can no longer reach the pages) and unmaps at once: GC cannot
// see mapped bytes, so it must not be what frees them.
Napi::Value Unmap(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "unmap");
  if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(info.Env(), "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  Addon* addon = info.Env().GetInstanceData<Addon>();
  void* addr = ab.Data();
  auto it = addon->mappings.find(addr);
  if (it == addon->mappings.end()) return info.Env().Undefined();
  Mapping* mapping = it->second;
  addon->mappings.erase(it);
  if (!ab.IsDetached()) ab.Detach();
  addon->DropPolledWaits(mapping->addr, mapping->size);
  shm::Unmap(mapping->addr, mapping->size);
  mapping->mapped = false;
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -static_cast<int64_t>(mapping->size));
  return info.Env().Undefined();
}

// subView(buffer, byteOffset, length): an ArrayBuffer over part of a mapping, so that an object
// in an arena block (a small Array) can be detached alone when it is closed. It owns nothing and
// has no finalizer: it is reachable only through its object, which keeps the mapping alive and
// detaches the view before giving its block back.
Napi::Value SubView(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "subView");
  if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(info.Env(), "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  int64_t offset = IntArg(info, 1, "byteOffset");
  int64_t length = IntArg(info, 2, "length");
  if (ab.IsDetached() || offset < 0 || length < 0 || static_cast<size_t>(offset + length) > ab.ByteLength()) {
    throw Napi::RangeError::New(info.Env(), "subView: the range is outside the buffer");
  }
  return Napi::ArrayBuffer::New(info.Env(), static_cast<char*>(ab.Data()) + offset, static_cast<size_t>(length));
}

// detachView(view): the view can no longer reach the memory.
Napi::Value DetachView(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "detachView");
  if (!info[0].IsArrayBuffer()) throw Napi::TypeError::New(info.Env(), "view must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (!ab.IsDetached()) ab.Detach();
  return info.Env().Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "closeFd");
  shm::Close(static_cast<int>(IntArg(info, 0, "fd")));
  return info.Env().Undefined();
}

Napi::Value Unlink(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "unlink");
  try {
    shm::Unlink(StringArg(info, 0, "name"));
  } catch (const SysFail& f) {
    ThrowSysFail(info.Env(), f);
  }
  return info.Env().Undefined();
}

}  // namespace

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("createAnonymous", Napi::Function::New(env, CreateAnonymous, "createAnonymous"));
  exports.Set("createNamed", Napi::Function::New(env, CreateNamed, "createNamed"));
  exports.Set("openNamed", Napi::Function::New(env, OpenNamed, "openNamed"));
  exports.Set("openFromProcess", Napi::Function::New(env, OpenFromProcess, "openFromProcess"));
  exports.Set("checkOwnFd", Napi::Function::New(env, CheckOwnFd, "checkOwnFd"));
  exports.Set("identify", Napi::Function::New(env, Identify, "identify"));
  exports.Set("map", Napi::Function::New(env, Map, "map"));
  exports.Set("unmap", Napi::Function::New(env, Unmap, "unmap"));
  exports.Set("subView", Napi::Function::New(env, SubView, "subView"));
  exports.Set("detachView", Napi::Function::New(env, DetachView, "detachView"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("unlink", Napi::Function::New(env, Unlink, "unlink"));
}

}  // namespace mp
