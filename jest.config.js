// Tests run against the compiled package (dist/), which `npm test` builds first: children load
// dist/bootstrap.js, never ts-jest output. Coverage is V8's: babel's instrumentation would rewrite
// the bodies of functions that tests send to children by source.
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/test/tsconfig.json' }] },
  coverageProvider: 'v8',
  setupFilesAfterEnv: ['<rootDir>/test/leaks.ts'],
  testTimeout: 30000,
  maxWorkers: 2,
};
