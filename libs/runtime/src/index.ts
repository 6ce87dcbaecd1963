export * from './clock';
export * from './config';
export * from './ids';
export * from './nats';
export * from './nest';
export * from './rpc-client';
export * from './tracer';
