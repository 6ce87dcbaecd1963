export * from './checks';
export * from './snapshot';
export * from './run';
