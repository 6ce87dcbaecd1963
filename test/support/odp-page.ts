/**
 * A process with one page written by cpu0 (value 7) and mapped by a read ODP MR of hca0, read
 * back through it: unmapping the page notifies hca0 (the shutdown tests' work in flight).
 */
import { expect } from 'vitest';
import type { RpcClient } from '@mmlab/runtime';

export async function odpMappedPage(
  rpc: RpcClient,
): Promise<{ pid: number; addr: number; mr: number }> {
  const { pid } = await rpc.call('processCreate', {});
  const { addr } = await rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
  await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 7 }, { id: 0 });
  const { mr } = await rpc.call(
    'hcaRegMr',
    { pid, addr, pages: 1, odp: true, access: ['read'] },
    { id: 'hca0' },
  );
  expect((await rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' })).value).toBe(7);
  return { pid, addr, mr };
}
