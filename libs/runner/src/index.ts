export * from './local-lab';
export * from './servers';
export * from './redis-users';
export * from './nats-identities';
