# The one list of native sources. binding.gyp includes this file and CMakeLists.txt parses it,
# so the two builds cannot drift apart (test/00.build.test.ts checks that too).
{
  'variables': {
    # The OS-resource core: plain C++, no Node-API, linked into the sanitizer test binary too.
    'mp_core_sources': [
      'native/shm.cc',
      'native/futex.cc',
      'native/waiter.cc',
      'native/uring_waiter.cc',
      'native/tracker.cc',
      'native/spawn.cc',
      'native/ring.cc',
    ],
    # The thin JS boundary over the core.
    'mp_addon_sources': [
      'native/addon.cc',
      'native/errors.cc',
      'native/bindings/shm_binding.cc',
      'native/bindings/sync_binding.cc',
      'native/bindings/process_binding.cc',
      'native/bindings/ring_binding.cc',
    ],
  },
}
