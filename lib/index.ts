// node-multiprocessing: Python's multiprocessing for Node.
export { BrokenBarrierError, BufferTooShort, Empty, EOFError, Full, OwnerDiedError, TimeoutError, WorkerLostError } from './errors';
export { SharedMemory } from './shared-memory';
export type { SharedMemoryOptions } from './shared-memory';
export {
  Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore,
} from './synchronize';
export type { AcquireOptions, AcquireSyncOptions, BarrierOptions } from './synchronize';
export type { ElementOf, Typecode, TypedArrayOf, TypeName, ValueOf } from './typecodes';
export { RawArray, RawValue, SharedArray as Array, Value } from './value';
export type { SharedArray, SharedArrayMethods, SharedOptions } from './value';
export { activeChildren, Process } from './process';
export { getAllStartMethods, getStartMethod, setStartMethod, sparesReady } from './start-method';
export type { StartMethod, WarmOptions } from './start-method';
export type { AnyFunction, ProcessOptions, ResourceUsage } from './process';
export { cpuCount, currentProcess, parentProcess } from './context';
export { getWaitPolling, setWaitPolling } from './wait';
export type { CurrentProcess, ParentProcess } from './context';
export { task, tasks, Task } from './task';
export { Connection, JoinableQueue, Pipe, Queue, SimpleQueue } from './queues';
export type { GetOptions, PipeOptions, PutOptions, QueueOptions } from './queues';
export { Pool } from './pool';
export { backends } from './backends';
export type { Backend, BullMQBackendOptions, RedisConnection, RedisConnectionOptions, RedisTlsOptions } from './backends';
export type { ApplyAsyncOptions, ApplyOptions, Items, MapAsyncOptions, MapOptions, PoolOptions, PoolTask, TaskResult } from './pool';
export { AsyncResult } from './async-result';
export type { AsyncResultCallbacks } from './async-result';
