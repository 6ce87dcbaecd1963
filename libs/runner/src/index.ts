export * from './local-lab';
export * from './servers';
export * from './nats-identities';
