#include "errors.h"

#include <cstring>

namespace mp {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

Napi::Error SystemError(Napi::Env env, const char* syscall, int err, const std::string& path) {
  std::string code = ErrnoName(err);
  std::string message = std::string(syscall) + ": " + code + " (" + strerror(err) + ")";
  if (!path.empty()) message += " '" + path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("code", code);
  obj.Set("errno", -err);
  obj.Set("syscall", syscall);
  if (!path.empty()) obj.Set("path", path);
  return error;
}

void ThrowSystemError(Napi::Env env, const char* syscall, int err, const std::string& path) {
  throw SystemError(env, syscall, err, path);
}

void ThrowSysFail(Napi::Env env, const SysFail& fail) {
  ThrowSystemError(env, fail.syscall, fail.err, fail.path);
}

}  // namespace mp
