import { MmlabError } from '@mmlab/protocol';

/** 'ok', or the wire error code a call failed with (anything untyped is reported as such). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return e instanceof MmlabError ? e.code : `untyped: ${String(e)}`;
  }
}
