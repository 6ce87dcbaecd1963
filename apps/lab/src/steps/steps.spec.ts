/** The handler registry covers exactly the step kinds of the scenario format. */
import { STEP_OPS } from '@mmlab/scenario';
import { describe, expect, it } from 'vitest';
import { STEP_HANDLERS } from '.';

describe('STEP_HANDLERS', () => {
  it('has one handler for every step kind and none for a kind that does not exist', () => {
    expect(Object.keys(STEP_HANDLERS).sort()).toEqual([...STEP_OPS].sort());
    for (const op of STEP_OPS) expect(typeof STEP_HANDLERS[op]).toBe('function');
  });
});
