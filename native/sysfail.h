// How the core reports a failed syscall: the binding layer turns it into a JS SystemError.
#pragma once
#include <string>

namespace mp {

struct SysFail {
  const char* syscall;
  int err;
  std::string path;
};

}  // namespace mp
