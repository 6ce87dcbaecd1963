export * from './errors';
export * from './fields';
export * from './rpc';
export * from './trace';
export * from './units';
export * from './packet';
export * from './chaos';
export * from './eras';
