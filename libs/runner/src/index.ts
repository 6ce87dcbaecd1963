export * from './local-lab';
export * from './servers';
