/** Notifier callbacks sent by hand (not by mm), to look at a subscriber's replies on the wire. */
import { RPC, subjectFor } from '@mmlab/protocol';
import { encodeRequest } from '@mmlab/runtime';

/** An invalidate_range_end to `subscriber` as mm would send it, with an inv the test chooses (acked whatever it is). */
export const rawRangeEnd = (subscriber: string, inv: string): string =>
  encodeRequest(subjectFor(RPC.mnInvalidateRangeEnd, subscriber), {
    pid: 1,
    inv,
    owner: 'test',
    start: 0x10000000,
    end: 0x10001000,
    event: 'unmap',
  });
