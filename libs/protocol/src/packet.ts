/**
 * The envelope Nest's NATS transport puts around every request and reply
 * (@nestjs/microservices ServerNats / ClientNats, JSON codec). Declared here so that callers
 * that use the raw `nats` client (for one-round-trip requests on the fault path) and the Nest
 * servers agree byte for byte.
 */
import { z } from 'zod';
import { WireErrorSchema } from './errors';

export const RequestPacket = z.object({ id: z.string(), pattern: z.string(), data: z.unknown() });
export type RequestPacket = z.infer<typeof RequestPacket>;

export const ReplyPacket = z.object({
  id: z.string().optional(),
  response: z.unknown().optional(),
  err: z.unknown().optional(),
  isDisposed: z.boolean().optional(),
});
export type ReplyPacket = z.infer<typeof ReplyPacket>;

/** Marks the data of a request whose bytes did not decode, so the handler answers EBADMSG. */
export const MALFORMED = '__mmlab_malformed__';
export const MalformedData = z.object({ [MALFORMED]: z.string() });

export { WireErrorSchema };
