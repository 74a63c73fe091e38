// The two native builds (node-gyp via binding.gyp, cmake-js via CMakeLists.txt) compile one
// source list, native/sources.gypi; this fails the day someone adds a file to one build only.
import * as fs from 'fs';
import * as path from 'path';

import { ROOT } from './helpers';

function listIn(gypi: string, key: string): string[] {
  const block = new RegExp(`'${key}': \\[([^\\]]*)\\]`).exec(gypi);
  if (block === null) throw new Error(`no list ${key}`);
  return [...block[1].matchAll(/'(native\/[^']+\.cc)'/g)].map((m) => m[1]);
}

function ccFiles(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return rel === 'native/test' ? [] : ccFiles(rel);
    return e.name.endsWith('.cc') ? [rel] : [];
  });
}

test('every native source is in the one list, and both build files read that list', () => {
  const gypi = fs.readFileSync(path.join(ROOT, 'native/sources.gypi'), 'utf8');
  const listed = [...listIn(gypi, 'mp_core_sources'), ...listIn(gypi, 'mp_addon_sources')].sort();
  expect(listed).toEqual(ccFiles('native').sort());

  const gyp = fs.readFileSync(path.join(ROOT, 'binding.gyp'), 'utf8');
  expect(gyp).toContain("'includes': ['native/sources.gypi']");
  expect(gyp).toContain("'<@(mp_core_sources)', '<@(mp_addon_sources)'");
  expect(gyp).not.toMatch(/native\/[a-z_/]+\.cc/);

  const cmake = fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8');
  expect(cmake).toContain('native/sources.gypi');
  expect(cmake).toContain('mp_source_list(MP_CORE_SOURCES mp_core_sources)');
  expect(cmake).toContain('mp_source_list(MP_ADDON_SOURCES mp_addon_sources)');
  expect(cmake.match(/native\/(?!test\/)[a-z_]+\.cc/g)).toBeNull();
});

test('the core sources do not include Node-API (the sanitizer test binary links them alone)', () => {
  const gypi = fs.readFileSync(path.join(ROOT, 'native/sources.gypi'), 'utf8');
  for (const file of listIn(gypi, 'mp_core_sources')) {
    const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
    expect({ file, napi: /#include\s+[<"](napi|node_api)/.test(text) }).toEqual({ file, napi: false });
  }
});
