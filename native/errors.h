// System errors as Node reports them: an Error with code ('EACCES'), errno (negative, as in
// Node's SystemError) and syscall ('shm_open'), built in one place.
#pragma once
#include <napi.h>
#include <string>

#include "sysfail.h"

namespace mp {

// Returns the errno name ('ENOENT'), or 'E<number>' for an unknown value.
std::string ErrnoName(int err);

// Builds the JS error for a failed syscall; `path` is added when not empty.
Napi::Error SystemError(Napi::Env env, const char* syscall, int err, const std::string& path = "");

// Throws it (node-addon-api is built with C++ exceptions: node_addon_api_except).
[[noreturn]] void ThrowSystemError(Napi::Env env, const char* syscall, int err,
                                   const std::string& path = "");

// Rethrows a core SysFail as the JS error.
[[noreturn]] void ThrowSysFail(Napi::Env env, const SysFail& fail);

}  // namespace mp
