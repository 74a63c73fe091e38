// Whether to poll for an answer before sleeping on it. Polling pays when the other side answers
// within the window: a pool's round trip is then 7 µs instead of two wake-ups. On a machine whose
// cores are all busy it does the opposite: the poller holds the core the other side needs to
// answer, and the round trip went from 7 µs to 200-300 µs with one of two cores taken by another
// process. So a window that ran out without an answer skips the next 1, 2, 4 ... 64 windows.

const MAX_BACKOFF = 64;
const SKIP = 0;
const BACKOFF = 1;

export class SpinBudget {
  /**
   * [skip, back-off], in memory of its own that never moves: a wait resolved in native code
   * records its hit there itself (a back-off of 1), with no JS run (see WaitClaim).
   */
  readonly state = new Int32Array(new ArrayBuffer(8));

  constructor() {
    this.state[BACKOFF] = 1;
  }

  /** Whether the wait about to start may poll first; a wait that may not counts down the skip. */
  begin(): boolean {
    const s = this.state;
    if (s[SKIP] === 0) return true;
    s[SKIP]--;
    return false;
  }

  /** The answer came while polling: poll again next time. */
  hit(): void {
    this.state[BACKOFF] = 1;
  }

  /** The window ran out with no answer: skip the next windows, twice as many as last time. */
  missed(): void {
    const s = this.state;
    s[SKIP] = s[BACKOFF];
    s[BACKOFF] = Math.min(s[BACKOFF] * 2, MAX_BACKOFF);
  }
}
