/**
 * Typed errors on the wire: `{code, message, definite}`, in the style of Maelstrom's errors.edn.
 *
 * `definite` says whether the operation certainly did not happen (true) or may still have
 * happened, or may happen later (false: a timeout, a lost lease mid-write).
 * Every error a service can answer with is listed here once; nothing else is sent.
 */
import { z } from 'zod';

export const ERRORS = {
  EBADMSG: {
    definite: true,
    doc: 'The message did not parse or did not match the subject schema.',
  },
  ESRCH: { definite: true, doc: 'No such process (address space).' },
  SIGSEGV: {
    definite: true,
    doc: 'The access is outside every VMA or forbidden by its protection.',
  },
  SIGBUS: {
    definite: true,
    doc:
      'The access is inside a mapping of a file but past the end of the file, or faults a ' +
      'hugetlb page when the huge page pool is empty (hugetlb_no_page: VM_FAULT_SIGBUS).',
  },
  ENOENT: { definite: true, doc: 'No such file.' },
  ENOMEM: { definite: true, doc: 'No free frame (or no address space) left.' },
  EINVAL: {
    definite: true,
    doc: 'The arguments are well formed but invalid (unaligned, zero length, ...).',
  },
  EFAULT: {
    definite: true,
    doc: 'A device access the mapping refuses: an unmapped or PROT_NONE page, or a write (or a write fault) to a read-only one.',
  },
  EPERM: {
    definite: true,
    doc: "An access the memory region (MR) was not registered for; or a request acting for an identity other than the one it was sent as (its subject's), or dropping pins its sender does not hold. Nothing was changed.",
  },
  ENODEV: {
    definite: true,
    doc: 'The device was fenced off (its notifier liveness lease expired): its accesses are refused.',
  },
  EAGAIN: {
    definite: true,
    doc: 'Contention did not clear before the deadline; nothing was changed.',
  },
  ESTALE: {
    definite: false,
    doc: 'A page-table write was rejected because the caller no longer holds the lock (fencing token is stale). Earlier steps of the operation may have happened.',
  },
  ETIMEDOUT: {
    definite: false,
    doc: 'No answer before the deadline; the operation may still happen.',
  },
  EOWNERDEAD: {
    definite: false,
    doc: 'The mm replica running the operation died in the middle of it; another replica answers for it and finishes it (rolled forward) or undoes it (rolled back).',
  },
  ENOHANDLER: { definite: true, doc: 'No service answers on this subject.' },
  EACCES: {
    definite: true,
    doc: "A mutating HTTP request without the lab's token (or with a wrong one), or to a lab started without one; nothing was changed.",
  },
  ESHUTDOWN: {
    definite: false,
    doc: 'The service is stopping and gave up a request it had started (a clean stop past its deadline); part of it may have happened.',
  },
  EINTERNAL: { definite: false, doc: 'A bug: the service caught an unexpected exception.' },
} as const satisfies Record<string, { definite: boolean; doc: string }>;

export type ErrorCode = keyof typeof ERRORS;
export const ERROR_CODES = Object.keys(ERRORS) as [ErrorCode, ...ErrorCode[]];

export const WireErrorSchema = z.object({
  code: z.enum(ERROR_CODES),
  message: z.string(),
  definite: z.boolean(),
});
export type WireError = z.infer<typeof WireErrorSchema>;

/** The one error class: thrown by handlers, rebuilt by callers from the wire. */
export class MmlabError extends Error {
  readonly definite: boolean;
  constructor(
    readonly code: ErrorCode,
    message: string,
    definite?: boolean,
  ) {
    super(`${code}: ${message}`);
    this.name = 'MmlabError';
    this.definite = definite ?? ERRORS[code].definite;
  }

  toWire(): WireError {
    return {
      code: this.code,
      message: this.message.replace(`${this.code}: `, ''),
      definite: this.definite,
    };
  }

  static fromWire(w: WireError): MmlabError {
    return new MmlabError(w.code, w.message, w.definite);
  }

  /** Any thrown value, as a wire error: MmlabErrors keep their code, the rest are EINTERNAL. */
  static wrap(err: unknown): MmlabError {
    if (err instanceof MmlabError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    return new MmlabError('EINTERNAL', msg);
  }
}

export function isErrorCode(s: string): s is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERRORS, s);
}
