// Argument checks for the binding layer. The TypeScript layer validates every argument with a
// precise message first; these cheap re-checks only keep a misuse of the raw binding from
// reaching a syscall or undefined behaviour.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace mp {

inline void RequireArgs(const Napi::CallbackInfo& info, size_t n, const char* fn) {
  if (info.Length() < n) throw Napi::TypeError::New(info.Env(), std::string(fn) + ": missing arguments");
}

inline int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  // Range first: converting NaN, an infinity or anything past int64 is undefined behaviour.
  if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0)) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + " is out of range");
  }
  if (d != std::trunc(d)) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an integer");
  return static_cast<int64_t>(d);
}

inline std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// The 32-bit word at byte `offset` of an ArrayBuffer, checked for bounds and alignment: the
// buffer is argument i, the offset argument `offset_at` (by default the next one).
inline uint32_t* WordArg(const Napi::CallbackInfo& info, size_t i, size_t offset_at = 0) {
  if (!info[i].IsArrayBuffer()) throw Napi::TypeError::New(info.Env(), "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer ab = info[i].As<Napi::ArrayBuffer>();
  int64_t offset = IntArg(info, offset_at == 0 ? i + 1 : offset_at, "byteOffset");
  if (offset < 0 || offset % 4 != 0 || static_cast<size_t>(offset) + 4 > ab.ByteLength()) {
    throw Napi::RangeError::New(info.Env(), "byteOffset is out of bounds or unaligned");
  }
  return reinterpret_cast<uint32_t*>(static_cast<char*>(ab.Data()) + offset);
}

}  // namespace mp
