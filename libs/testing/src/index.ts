export * from './local-lab';
export * from './servers';
export * from './trace-log';
export * from './errors';
export * from './cli';
