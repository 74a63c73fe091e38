// Registration only: each OS resource has its own binding file under bindings/.
#include "addon.h"

namespace mp {

Addon::Addon(Napi::Env env, Napi::Object exports) {
  InitShm(env, exports);
  InitSync(env, exports);
  InitProcess(env, exports);
}

Addon::~Addon() {
  // Stop the threads before the thread-safe functions they call go away.
  waiter.reset();
  exit_watcher.reset();
  if (wait_tsfn) wait_tsfn.Abort();
  if (exit_tsfn) exit_tsfn.Abort();
}

}  // namespace mp

using NodeMultiprocessingAddon = mp::Addon;
NODE_API_ADDON(NodeMultiprocessingAddon)
