export * from './trace-log';
export * from './test-lab';
export * from './errors';
export * from './cli';
export * from './browser';
export * from './raw-callbacks';
export * from './redis-monitor';
export * from './invariants';
