export * from './callback_log';
export * from './notifier_seq';
export * from './notifier.controller';
export * from './subscriber';
