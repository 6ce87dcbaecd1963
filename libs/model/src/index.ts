export * from './keys';
export * from './lease';
export * from './pte';
export * from './scripts';
export * from './store';
export * from './vma';
export * from './liveness';
export * from './ksm/store';
