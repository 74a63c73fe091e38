import { SpinBudget } from '../dist/spin';

// Polling before sleeping pays only when the answer comes within the window; a window that ran
// out makes the pool and its workers sleep at once for the next 1, 2, 4 ... 64 waits.
test('a missed window skips the next windows, twice as many each time up to 64; a hit polls again at once', () => {
  const spin = new SpinBudget();
  const pattern = (waits: number): string => Array.from({ length: waits }, () => (spin.begin() ? 'p' : '-')).join('');
  expect(spin.begin()).toBe(true);
  spin.missed();
  expect(pattern(2)).toBe('-p');   // skipped 1, then polled
  spin.missed();
  expect(pattern(3)).toBe('--p');  // skipped 2
  for (let i = 0; i < 10; i++) {
    spin.missed();
    while (!spin.begin());
  }
  spin.missed();
  expect(pattern(66)).toBe(`${'-'.repeat(64)}pp`);  // capped at 64
  spin.hit();
  spin.missed();
  expect(pattern(2)).toBe('-p');   // a hit starts the back-off over
});

// A wait resolved in native code (a claim made while polling) reports nothing: its hit is
// counted when its window is granted, and a miss reported after all backs off as from before.
test('a window begun assuming a hit counts as one at once; a miss reported for it backs off from the back-off before it', () => {
  const spin = new SpinBudget();
  const pattern = (waits: number): string => Array.from({ length: waits }, () => (spin.begin() ? 'p' : '-')).join('');
  expect(spin.begin()).toBe(true);
  spin.missed();
  expect(pattern(1)).toBe('-');
  expect(spin.beginAssumingHit()).toBe(true);  // nothing reported: a hit
  expect(spin.begin()).toBe(true);
  spin.missed();
  expect(pattern(2)).toBe('-p');                // skipped 1: the back-off started over
  spin.missed();
  expect(pattern(2)).toBe('--');                // skipped 2
  expect(spin.beginAssumingHit()).toBe(true);
  spin.missed();                                // reported after all: from 4, not from 1
  expect(pattern(5)).toBe('----p');
});
