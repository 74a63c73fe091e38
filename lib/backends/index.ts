// mp.backends: where a Pool's tasks run. The default is worker processes on this machine; pass
// one of these as `new mp.Pool({ backend })` to run them elsewhere.
import { bullmq } from './bullmq';

export const backends = {
  /** Worker hosts that share a Redis queue, by BullMQ (docs/scale-out.md). */
  bullmq,
};

export type { Backend } from './backend';
export type { BullMQBackendOptions, RedisConnection, RedisConnectionOptions, RedisTlsOptions } from './bullmq';
