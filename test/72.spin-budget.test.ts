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

// A wait resolved in native code records its hit in the budget's state itself (WaitClaim).
test('its state is [skip, back-off] in memory of its own: a back-off of 1 written there is a hit', () => {
  const spin = new SpinBudget();
  spin.missed();
  spin.begin();
  spin.missed();
  expect([...spin.state]).toEqual([2, 4]);
  expect(spin.state.buffer.byteLength).toBe(8);
  spin.state[1] = 1;  // as the binding records a hit
  spin.begin();
  spin.begin();
  spin.missed();
  expect([...spin.state]).toEqual([1, 2]);
});
