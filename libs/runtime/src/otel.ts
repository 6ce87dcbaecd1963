/**
 * OpenTelemetry for the lab's services: spans exported over OTLP/HTTP (JSON) when
 * OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and W3C trace
 * context (`traceparent`) carried in NATS message headers on every request between services.
 *
 * Not configured, nothing is loaded but @opentelemetry/api and every helper below returns at
 * its first line: no span objects, no headers, no context switches on the fault path. The SDK
 * and the exporter are imported only when telemetry is switched on.
 *
 * These spans are a view for Jaeger and friends; the lab's own trace events (libs/protocol,
 * published by Tracer) are what the checker reads, and they do not depend on any of this.
 */
import {
  type Attributes,
  type Context,
  type Link,
  ROOT_CONTEXT,
  type Span,
  type SpanOptions,
  SpanStatusCode,
  type TextMapGetter,
  context,
  propagation,
  trace,
} from '@opentelemetry/api';
import { type MsgHdrs, headers as natsHeaders } from 'nats';

export type { Span } from '@opentelemetry/api';
export { SpanKind } from '@opentelemetry/api';

let enabled = false;
let provider: { shutdown(): Promise<void> } | null = null;
let identity = { service: 'mmlab', instance: 'unknown' };

/** Is an OTLP endpoint configured in env (and the SDK not disabled)? */
export function otlpConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return false;
  return Boolean(
    env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim(),
  );
}

/** True once initTelemetry switched spans on in this process. */
export const telemetryEnabled = (): boolean => enabled;

/** The service and instance this process reports as (its resource). */
export const telemetryIdentity = (): { service: string; instance: string } => identity;

/**
 * Set up tracing for this process: a tracer provider whose resource names the service
 * (service.name) and the instance (service.instance.id), a BatchSpanProcessor (OTEL_BSP_*)
 * feeding the OTLP/HTTP JSON exporter (OTEL_EXPORTER_OTLP_*), the W3C trace-context
 * propagator and the AsyncLocalStorage context manager. A no-op when no endpoint is set.
 * Returns whether spans are on.
 */
export async function initTelemetry(
  service: string,
  instance: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<boolean> {
  identity = { service, instance };
  if (enabled || !otlpConfigured(env)) return enabled;
  const [node, otlp, resources, core] = await Promise.all([
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/core'),
  ]);
  const p = new node.NodeTracerProvider({
    resource: resources.defaultResource().merge(
      resources.resourceFromAttributes({
        'service.name': service,
        'service.instance.id': instance,
        'service.namespace': 'mmlab',
      }),
    ),
    spanProcessors: [new node.BatchSpanProcessor(new otlp.OTLPTraceExporter())],
  });
  p.register({ propagator: new core.W3CTraceContextPropagator() });
  provider = p;
  enabled = true;
  return true;
}

/** Export what is still queued and stop; waits at most timeoutMs (an unreachable collector must not hold up an exit). */
export async function shutdownTelemetry(timeoutMs = 3000): Promise<void> {
  const p = provider;
  if (!p) return;
  provider = null;
  enabled = false;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.shutdown().catch(() => undefined),
    new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
  ]);
  clearTimeout(timer);
}

const tracer = () => trace.getTracer('mmlab');

/** Span options, or a function making them: called only when telemetry is on (attributes cost nothing when off). */
export type SpanOptionsArg = SpanOptions | (() => SpanOptions);
const optionsOf = (o: SpanOptionsArg | undefined): SpanOptions | undefined =>
  typeof o === 'function' ? o() : o;

/** A new span, child of parent (default: the active context) unless options.root; undefined when off. */
export function startSpan(
  name: string,
  options?: SpanOptionsArg,
  parent?: Context,
): Span | undefined {
  if (!enabled) return undefined;
  return tracer().startSpan(name, optionsOf(options), parent ?? context.active());
}

/** Run fn with span as the active span (fn itself when there is no span). */
export function withSpan<T>(span: Span | undefined, fn: () => T): T {
  if (!span) return fn();
  return context.with(trace.setSpan(context.active(), span), fn);
}

/**
 * Run fn inside a new active span that ends when fn settles (an error sets its status).
 * When telemetry is off this is fn(undefined) and nothing else.
 */
export function inSpan<T>(
  name: string,
  options: SpanOptionsArg,
  fn: (span: Span | undefined) => Promise<T>,
  parent?: Context,
): Promise<T> {
  if (!enabled) return fn(undefined);
  return runInSpan(name, options, fn, parent ?? context.active());
}

async function runInSpan<T>(
  name: string,
  options: SpanOptionsArg,
  fn: (span: Span | undefined) => Promise<T>,
  parent: Context,
): Promise<T> {
  const span = tracer().startSpan(name, optionsOf(options), parent);
  try {
    // fn starts in this tick (callers rely on running up to their first await at once).
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (e) {
    markError(span, e);
    throw e;
  } finally {
    span.end();
  }
}

/** The error code of anything thrown: an MmlabError, a wire error, a Nest RpcException around one. */
function errorOf(e: unknown): { code: string; message: string } {
  let x: unknown = e;
  if (typeof x === 'object' && x !== null && 'getError' in x && typeof x.getError === 'function')
    x = (x.getError as () => unknown).call(x);
  if (typeof x === 'object' && x !== null) {
    const o = x as { code?: unknown; message?: unknown };
    return {
      code: typeof o.code === 'string' ? o.code : 'EINTERNAL',
      message: typeof o.message === 'string' ? o.message : String(e),
    };
  }
  return { code: 'EINTERNAL', message: String(x) };
}

/** Mark span failed with the error's code (mmlab.error.code) and message. */
export function markError(span: Span | undefined, e: unknown): void {
  if (!span) return;
  const { code, message } = errorOf(e);
  span.setAttribute('mmlab.error.code', code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: `${code}: ${message}` });
}

/** End span, marking it failed when e is given. */
export function endSpan(span: Span | undefined, e?: unknown): void {
  if (!span) return;
  if (e !== undefined) markError(span, e);
  span.end();
}

/** A link to the span active now: how a new root trace (an invalidation) points at the op that started it. */
export function linkToActive(attributes?: Attributes): Link[] {
  if (!enabled) return [];
  const s = trace.getActiveSpan();
  return s ? [{ context: s.spanContext(), ...(attributes ? { attributes } : {}) }] : [];
}

const hdrGetter: TextMapGetter<MsgHdrs> = {
  keys: (h) => h.keys(),
  get: (h, k) => (h.has(k) ? h.get(k) : undefined),
};

/**
 * The NATS headers of an outgoing request: base (if any) plus the active context's
 * `traceparent` (and `tracestate`). Returns base untouched when telemetry is off or no span
 * is active, so an untraced request carries no header block at all.
 */
export function injectTraceHeaders(base?: MsgHdrs): MsgHdrs | undefined {
  if (!enabled) return base;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  const keys = Object.keys(carrier);
  if (keys.length === 0) return base;
  const h = base ?? natsHeaders();
  for (const k of keys) h.set(k, carrier[k]);
  return h;
}

/** The caller's context from the headers of a received message (the root context if none). */
export function extractTraceContext(h: MsgHdrs | undefined | null): Context {
  if (!enabled || !h) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, h, hdrGetter);
}
