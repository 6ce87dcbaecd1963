export * from './callback_log';
export * from './fault_recheck';
export * from './notifier_seq';
export * from './notifier.controller';
export * from './subscriber';
export * from './device';
export * from './run-device';
export * from './inflight';
