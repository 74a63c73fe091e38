#!/usr/bin/env node
// `npm run test:links`: every link in README.md, docs/*.md and examples/*.md must resolve, and
// resolve inside this repository. Exits 1 and names each dead link otherwise.
//
// markdown-link-check finds the links and makes the checks it knows: a local file exists, and a
// `#fragment` names a heading of the same page. Two checks are added here, which it does not make:
// - a local link must stay inside the repository: users get the repository or the npm tarball,
//   never what lies beside it;
// - a fragment of another page (`docs/api.md#pool`) must name a heading of that page. The page is
//   handed to markdown-link-check with one link, `#pool`, so both kinds of fragment are matched
//   against headings by the same rule.
// Web links are not fetched (scripts/markdown-link-check.json): the tests run offline.
'use strict';
const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');
const markdownLinkCheck = require('markdown-link-check');

const root = path.resolve(__dirname, '..');
const config = JSON.parse(fs.readFileSync(path.join(__dirname, 'markdown-link-check.json'), 'utf8'));

/** The Markdown files whose links are checked: README.md, then docs/ and examples/ (not recursive). */
function markdownFiles() {
  const files = [path.join(root, 'README.md')];
  for (const dir of ['docs', 'examples']) {
    const abs = path.join(root, dir);
    if (!fs.existsSync(abs)) continue;
    for (const name of fs.readdirSync(abs).sort()) if (name.endsWith('.md')) files.push(path.join(abs, name));
  }
  return files;
}

function check(markdown, opts) {
  return new Promise((resolve, reject) => {
    markdownLinkCheck(markdown, opts, (err, results) => (err ? reject(err) : resolve(results)));
  });
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Whether `fragment` names a heading (or an HTML id) of the Markdown file `target`. */
async function hasAnchor(target, fragment) {
  const link = `#${fragment}`;
  const markdown = `${fs.readFileSync(target, 'utf8')}\n\n[anchor](${link})\n`;
  // Only the link added above is checked: the page's own links are checked in their own turn.
  const results = await check(markdown, { ignorePatterns: [{ pattern: `^(?!${escapeRegExp(link)}$)` }] });
  return results.some((r) => r.link === link && r.status === 'alive');
}

/** Why a local link that markdown-link-check found alive is dead after all, or null. */
async function localProblem(file, link) {
  if (link.startsWith('#')) return null;
  if (/^[a-z][a-z0-9+.-]*:/i.test(link)) return 'an absolute URL to a local file; link relative to the page instead';
  const hash = link.indexOf('#');
  const pathPart = decodeURIComponent(hash < 0 ? link : link.slice(0, hash));
  const fragment = hash < 0 ? '' : link.slice(hash + 1);
  const target = pathPart.startsWith('/') ? path.join(root, pathPart) : path.resolve(path.dirname(file), pathPart);
  const rel = path.relative(root, target);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return `it points outside the repository (${target})`;
  if (fragment !== '' && target.endsWith('.md') && !(await hasAnchor(target, fragment))) {
    return `${path.relative(root, target)} has no heading #${fragment}`;
  }
  return null;
}

async function main() {
  const dead = [];
  let total = 0;
  for (const file of markdownFiles()) {
    const name = path.relative(root, file);
    const results = await check(fs.readFileSync(file, 'utf8'), {
      ...config,
      baseUrl: `${pathToFileURL(path.dirname(file)).href}/`,
    });
    let checked = 0;
    let ignored = 0;
    for (const r of results) {
      if (r.status === 'ignored') {
        ignored++;
        continue;
      }
      checked++;
      if (r.status !== 'alive') {
        dead.push(`${name}: ${r.link} (${r.err ? r.err.message ?? r.err : `status ${r.statusCode}`})`);
        continue;
      }
      const problem = await localProblem(file, r.link);
      if (problem !== null) dead.push(`${name}: ${r.link} (${problem})`);
    }
    console.log(`${name}: ${checked} links checked${ignored > 0 ? `, ${ignored} web links not fetched` : ''}`);
  }
  total = dead.length;
  if (total > 0) {
    console.error(`\n${total} dead link${total === 1 ? '' : 's'}:`);
    for (const d of dead) console.error(`  ${d}`);
    process.exit(1);
  }
  console.log('every link resolves');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
