export const MM_CONTEXT = Symbol('MM_CONTEXT');
