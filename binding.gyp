{
  'includes': ['native/sources.gypi'],
  'targets': [
    {
      'target_name': 'node_multiprocessing',
      'sources': ['<@(mp_core_sources)', '<@(mp_addon_sources)'],
      'dependencies': ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      'defines': ['NAPI_VERSION=8'],
      'cflags_cc': ['-std=c++17', '-Wall', '-Wextra', '-Wno-unused-parameter'],
      'conditions': [
        ['OS!="linux"', { 'type': 'none' }],
      ],
    },
  ],
}
