// Whether to poll for an answer before sleeping on it. Polling pays when the other side answers
// within the window: a pool's round trip is then 7 µs instead of two wake-ups. On a machine whose
// cores are all busy it does the opposite: the poller holds the core the other side needs to
// answer, and the round trip went from 7 µs to 200-300 µs with one of two cores taken by another
// process. So a window that ran out without an answer skips the next 1, 2, 4 ... 64 windows.

const MAX_BACKOFF = 64;

export class SpinBudget {
  private skip = 0;
  private backoff = 1;

  /** The back-off before a window whose hit was counted in advance (beginAssumingHit). */
  private assumedFrom: number | undefined;

  /** Whether the wait about to start may poll first; a wait that may not counts down the skip. */
  begin(): boolean {
    this.assumedFrom = undefined;
    if (this.skip === 0) return true;
    this.skip--;
    return false;
  }

  /**
   * As begin(), for a wait that nobody will report a hit for (it ends in native code): a granted
   * window counts as a hit now, and a miss reported later backs off from where it was before.
   */
  beginAssumingHit(): boolean {
    if (!this.begin()) return false;
    this.assumedFrom = this.backoff;
    this.backoff = 1;
    return true;
  }

  /** The answer came while polling: poll again next time. */
  hit(): void {
    this.assumedFrom = undefined;
    this.backoff = 1;
  }

  /** The window ran out with no answer: skip the next windows, twice as many as last time. */
  missed(): void {
    const from = this.assumedFrom ?? this.backoff;
    this.assumedFrom = undefined;
    this.skip = from;
    this.backoff = Math.min(from * 2, MAX_BACKOFF);
  }
}
