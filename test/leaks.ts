// After every test file: no name of ours left in /dev/shm by this process, and no child of ours
// still running (the name tracker is ours too but lives exactly as long as this process).
import { childrenOf, eventually, ourShmNames } from './helpers';

afterAll(async () => {
  const mine = `nmp_${process.pid.toString(36)}_`;
  const leftNames = (): string[] => ourShmNames().filter((n) => n.startsWith(mine));
  const liveChildren = (): Array<{ pid: number; comm: string }> =>
    childrenOf(process.pid).filter((c) => c.comm !== 'nmp-tracker');
  await eventually(() => leftNames().length === 0 && liveChildren().length === 0, 3000);
  expect(leftNames()).toEqual([]);
  expect(liveChildren()).toEqual([]);
});
