export * from './check';
export * from './parse';
export * from './results';
export * from './schema';
