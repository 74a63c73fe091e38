// Registration only: each OS resource has its own binding file under bindings/.
#include "addon.h"

namespace mp {

Addon::Addon(Napi::Env env, Napi::Object exports) {
  InitShm(env, exports);
  InitSync(env, exports);
  InitProcess(env, exports);
  InitRing(env, exports);
}

// Runs while Node tears the environment down. Our threads stop here, before anything they call
// goes away; the thread-safe functions themselves belong to Node by now, which closes them.
Addon::~Addon() {
  waiter.reset();
  exit_watcher.reset();
}

}  // namespace mp

using NodeMultiprocessingAddon = mp::Addon;
NODE_API_ADDON(NodeMultiprocessingAddon)
