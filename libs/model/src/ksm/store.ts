/**
 * Typed calls of KSM's scripts (ksm/scripts.ts), as functions of any store (StoreBase.call), so
 * that the Store's rooms stay as they are. apps/mm/src/kernel/ksm.ts is the one caller.
 */
import { MEM, procKeys } from '../keys';
import type { StoreBase } from '../store-base';

/** ksmPageInfo: the page's counts, flags and content, and the KSM page of that content. */
export function ksmPageInfo(store: StoreBase, pfn: number, gen: number) {
  return store.call('ksmPageInfo', MEM, { pfn, gen });
}

/** ksmStableInsert: → 'OK' | 'STALE' | the KSM page that already holds this content. */
export async function ksmStableInsert(
  store: StoreBase,
  pfn: number,
  gen: number,
): Promise<'OK' | 'STALE' | { pfn: number; gen: number }> {
  const r = await store.call('ksmStableInsert', MEM, { pfn, gen });
  return r.r === 'EXISTS' ? { pfn: r.kpfn, gen: r.kgen } : r.r;
}

/**
 * ksmPteClear under a held PT lock: → {w, cpumask} (cleared; w what it was) | 'CLEAN' |
 * 'GONE' | null (the lease was lost).
 */
export async function ksmPteClear(
  store: StoreBase,
  pid: number,
  lock: string,
  value: string,
  token: number,
  vpn: number,
  page: { pfn: number; gen: number },
  mode: 'wp' | 'same',
  w: 0 | 1 = 0,
): Promise<{ w: number; cpumask: string[] } | 'CLEAN' | 'GONE' | null> {
  const k = procKeys(pid);
  const r = await store.call(
    'ksmPteClear',
    { ptl: k.ptl(lock), ptlmax: k.ptlmax, pte: k.pte, cpumask: k.cpumask },
    { value, lock, token, vpn, pfn: page.pfn, gen: page.gen, mode, w },
  );
  if (r.r === 'ESTALE') return null;
  if (r.r === 'OK') return { w: r.w, cpumask: r.cpumask };
  return r.r;
}

/** ksmReplaceGet: get_page(kpage) for pid's PTE at vpn, recorded as rec (→ false: kpage gone). */
export async function ksmReplaceGet(
  store: StoreBase,
  rec: string,
  owner: string,
  pid: number,
  vpn: number,
  kpage: { pfn: number; gen: number },
  page: { pfn: number; gen: number },
): Promise<boolean> {
  const r = await store.call('ksmReplaceGet', MEM, {
    rec,
    owner,
    pid,
    vpn,
    kpfn: kpage.pfn,
    kgen: kpage.gen,
    pfn: page.pfn,
    gen: page.gen,
  });
  return r.r === 'OK';
}

/** ksmReplaceEnd: put page's mapping (installed) or kpage's; → frames freed, or null (ended already). */
export async function ksmReplaceEnd(
  store: StoreBase,
  rec: string,
  owner: string,
  installed: boolean,
): Promise<number[] | null> {
  const r = await store.call('ksmReplaceEnd', MEM, { rec, owner, installed: installed ? 1 : 0 });
  return r.r === 'OK' ? r.freed : null;
}

/** The stable tree as it is ({mem}:ksm): content → KSM page, pfn → content. */
export async function ksmStableTree(store: StoreBase): Promise<Record<string, string>> {
  return store.redis.hgetall(MEM.ksm);
}
