export * from './callback_log';
export * from './mmu_interval_notifier';
export * from './notifier.controller';
export * from './subscriber';
