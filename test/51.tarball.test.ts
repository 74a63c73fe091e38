// The package as npm ships it: `npm pack` the work tree, check what the tarball holds, install it
// into an empty project in the temp dir (its two dependencies come from the registry, or npm's
// cache), and run the README's first example there, as CommonJS and as ESM. The install compiles
// the addon with node-gyp against the installed Node's headers, unless the tarball carries a
// prebuild for this platform.
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { eventually, ROOT } from './helpers';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  pid: number | undefined;
}

const nodePrefix = path.dirname(path.dirname(process.execPath));

// The environment of a user's shell: without what `npm test` exported for this repository
// (npm_package_*, npm_lifecycle_*, npm_config_local_prefix, ...) and without this repository's
// node_modules/.bin on PATH, so the empty project leans on nothing here. The Node running the tests
// comes first on PATH, so npm's scripts and node-gyp use it and its headers. Settings a CI passes
// in upper case (NPM_CONFIG_REGISTRY, NPM_CONFIG_USERCONFIG) are kept.
const userEnv: NodeJS.ProcessEnv = {};
for (const [key, value] of Object.entries(process.env)) {
  if (!key.startsWith('npm_') && key !== 'INIT_CWD') userEnv[key] = value;
}
userEnv.PATH = [path.dirname(process.execPath), ...(process.env.PATH ?? '').split(path.delimiter)]
  .filter((dir) => dir !== '' && path.relative(ROOT, dir).startsWith('..'))
  .join(path.delimiter);

// npm's own script, run by this Node; `npm` from PATH if Node's prefix has none.
const npmCli = [process.env.npm_execpath, path.join(nodePrefix, 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')]
  .find((file): file is string => file !== undefined && path.basename(file) === 'npm-cli.js' && fs.existsSync(file));

function run(file: string, args: string[], cwd: string, timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { cwd, env: userEnv, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, signal: child.signalCode, stdout, stderr, pid: child.pid });
      });
  });
}

const npm = (args: string[], cwd: string, timeoutMs: number): Promise<Run> =>
  npmCli === undefined ? run('npm', args, cwd, timeoutMs) : run(process.execPath, [npmCli, ...args], cwd, timeoutMs);

/** Processes still running with their working directory in `dir`: left behind by a run there. */
function processesIn(dir: string): string[] {
  const left: string[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cwd = fs.readlinkSync(`/proc/${entry}/cwd`);
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if ((cwd === dir || cwd.startsWith(dir + path.sep)) && state !== 'Z' && state !== 'X') left.push(`${entry} ${stat.slice(0, stat.lastIndexOf(')') + 1)}`);
    } catch {
      // Gone, or not ours to read.
    }
  }
  return left;
}

/** The names a process tree rooted at `pid` made in /dev/shm (the tracker unlinks them when it ends). */
const shmNamesOf = (pid: number): string[] => fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`nmp_${pid.toString(36)}_`));

/** The README's first ```js block: the example its opening paragraph promises prints 5000. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const block = /```js\n([\s\S]*?)```/.exec(readme);
  if (block === null) throw new Error('README.md has no ```js block');
  return block[1];
}

const IMPORT_LINE = /^import \* as mp from 'node-multiprocessing';.*\n/;

let tmp: string;
let app: string;
let packed: { filename: string; files: Array<{ path: string; size: number }>; size: number; unpackedSize: number };
let install: Run;

beforeAll(async () => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'nmp-tarball-')));
  app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  // npm test compiled dist/ already. --ignore-scripts: no "prepack"/"prepare" here, which would
  // rebuild dist/ under the other jest worker's feet; they only make a clean dist/ before a publish.
  expect(fs.existsSync(path.join(ROOT, 'dist', 'index.mjs'))).toBe(true);
  const pack = await npm(['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], ROOT, 60000);
  if (pack.code !== 0) throw new Error(`npm pack failed (${pack.code}):\n${pack.stderr}`);
  [packed] = JSON.parse(pack.stdout);

  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'nmp-tarball-app', version: '1.0.0', private: true }, null, 2));
  install = await npm(['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts',
    path.join(tmp, packed.filename)], app, 240000);
}, 300000);

afterAll(() => {
  if (tmp !== undefined) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the tarball holds dist/, the native sources, the two build files, the install script and prebuilds: nothing else', () => {
  const files = packed.files.map((f) => f.path).sort();
  const shipped = /^(package\.json|README\.md|LICENSE(\.\w+)?|binding\.gyp|CMakeLists\.txt|scripts\/build-native\.js|dist\/([\w-]+\/)?[\w.-]+\.(js|mjs|d\.ts)|native\/[\w/.-]+\.(cc|h|gypi)|prebuilds\/.+)$/;
  expect(files.filter((f) => !shipped.test(f))).toEqual([]);
  expect(files.filter((f) => /^(test|bench|examples|docs|lib|build|build-cmake|coverage|node_modules)\//.test(f) || f.endsWith('.map'))).toEqual([]);

  // The one script npm runs from the tarball at install, and nothing else of scripts/.
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  expect(pkg.scripts.install).toBe('node scripts/build-native.js');
  expect(files.filter((f) => f.startsWith('scripts/'))).toEqual(['scripts/build-native.js']);

  // Every module of lib/ as JS and types; the runtime loads bootstrap.js and pool-worker.js by path.
  const modules = fs.readdirSync(path.join(ROOT, 'lib'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3));
  for (const m of modules) expect(files).toEqual(expect.arrayContaining([`dist/${m}.js`, `dist/${m}.d.ts`]));
  expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'binding.gyp', 'CMakeLists.txt',
    'native/sources.gypi', 'dist/index.mjs', 'dist/bootstrap.js', 'dist/pool-worker.js']));
  for (const license of fs.readdirSync(ROOT).filter((f) => /^LICEN[CS]E/i.test(f))) expect(files).toContain(license);

  // Of native/, the sources the two builds name (sources.gypi for node-gyp; CMakeLists.txt, which
  // also names native/test/core_test.cc and cannot configure without it), every header, and no more.
  const named = ['native/sources.gypi', 'CMakeLists.txt']
    .flatMap((f) => [...fs.readFileSync(path.join(ROOT, f), 'utf8').matchAll(/native\/[\w/]+\.cc/g)].map((m) => m[0]));
  const headers = (dir: string): string[] => fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? headers(`${dir}/${e.name}`) : e.name.endsWith('.h') ? [`${dir}/${e.name}`] : []));
  expect(files).toEqual(expect.arrayContaining([...named, ...headers('native')]));
  expect(files.filter((f) => f.startsWith('native/') && !named.includes(f) && !f.endsWith('.h') && f !== 'native/sources.gypi')).toEqual([]);

  // Sources and JS only, unless prebuilds are in: well under a megabyte.
  if (!files.some((f) => f.startsWith('prebuilds/'))) expect(packed.size).toBeLessThan(1 << 20);
});

test('npm install of the tarball into an empty project builds or picks the addon, offline of the Node headers', async () => {
  if (install.code !== 0) throw new Error(`npm install failed (${install.code}, ${install.signal}):\n${install.stdout}\n${install.stderr}`);
  const pkgDir = path.join(app, 'node_modules', 'node-multiprocessing');
  const probe = await run(process.execPath, ['-p', `require('node-gyp-build').path(${JSON.stringify(pkgDir)})`], app, 30000);
  expect(probe.stderr).toBe('');
  const loaded = probe.stdout.trim();
  const prebuilt = packed.files.some((f) => f.path.startsWith(`prebuilds/${process.platform}-${process.arch}/`));
  expect(path.relative(pkgDir, loaded).split(path.sep)[0]).toBe(prebuilt ? 'prebuilds' : 'build');
  if (!prebuilt && fs.existsSync(path.join(nodePrefix, 'include', 'node', 'node_api.h'))) {
    // node-gyp compiled against the headers of the Node that runs it (scripts/build-native.js points
    // it there), or against the ones the user's npm config names: it downloaded nothing.
    const configured = await npm(['config', 'get', 'nodedir'], app, 30000);
    const gypi = fs.readFileSync(path.join(pkgDir, 'build', 'config.gypi'), 'utf8');
    const nodedir = /"nodedir": "([^"]*)"/.exec(gypi)?.[1];
    expect([nodePrefix, configured.stdout.trim()]).toContain(nodedir);
  }
  expect(processesIn(tmp)).toEqual([]);
}, 60000);

describe.each([
  ['CommonJS', 'index.cjs', (body: string) =>
    `const mp = require('node-multiprocessing');\n\n(async () => {\n${body}})();\n`],
  ['ESM', 'index.mjs', (body: string) => `import * as mp from 'node-multiprocessing';\n${body}`],
])('the README example, from the empty project, as %s', (_kind, file, wrap) => {
  test(`${file} prints 5000 and leaves no process and no name in /dev/shm`, async () => {
    expect(install.code).toBe(0);
    const example = readmeExample();
    expect(example).toMatch(IMPORT_LINE);
    fs.writeFileSync(path.join(app, file), wrap(example.replace(IMPORT_LINE, '')));
    const result = await run(process.execPath, [file], app, 30000);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe('5000');
    expect(await eventually(() => processesIn(app).length === 0 && shmNamesOf(result.pid!).length === 0, 3000)).toBe(true);
  }, 60000);
});
