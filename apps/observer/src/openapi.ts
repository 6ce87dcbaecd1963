/**
 * The observer's HTTP API as OpenAPI: the document at GET /api-json, Swagger UI at GET /api.
 * Routes carry one ApiDoc.<route>() decorator each; query parameters are documented from the
 * same zod schemas that validate them (a key added to a schema and not documented here is a
 * compile error), and the TraceEvent schema is zod's own JSON Schema export.
 */
import { type INestApplication, applyDecorators } from '@nestjs/common';
import {
  ApiBadRequestResponse,
  ApiBearerAuth,
  ApiBody,
  ApiHeader,
  ApiNotFoundResponse,
  ApiOkResponse,
  ApiOperation,
  ApiParam,
  ApiProduces,
  ApiQuery,
  ApiTags,
  ApiUnauthorizedResponse,
  ApiUnsupportedMediaTypeResponse,
  DocumentBuilder,
  SwaggerModule,
} from '@nestjs/swagger';
import type { SchemaObject } from '@nestjs/swagger/dist/interfaces/open-api-spec.interface';
import { z } from 'zod';
import { TraceEvent } from '@mmlab/protocol';
import { EventsQuery, InvariantsQuery } from './http-query';
import { StreamQuery } from './stream-query';

const EVENT_REF = { $ref: '#/components/schemas/TraceEvent' };
const WIRE_ERROR: SchemaObject = {
  type: 'object',
  properties: {
    code: { type: 'string', example: 'EBADMSG' },
    message: { type: 'string' },
    definite: { type: 'boolean' },
  },
};

type QueryDocs<S extends z.ZodObject> = Record<keyof S['shape'] & string, string>;

/** One ApiQuery per key of a zod query schema, with the schema of what the client sends. */
function queryParams<S extends z.ZodObject>(schema: S, docs: QueryDocs<S>): MethodDecorator[] {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as {
    properties?: Record<string, SchemaObject>;
  };
  return Object.keys(schema.shape).map((name) =>
    ApiQuery({
      name,
      required: false,
      description: docs[name as keyof QueryDocs<S>],
      schema: json.properties?.[name] ?? { type: 'string' },
    }),
  );
}

export const ApiDoc = {
  events: () =>
    applyDecorators(
      ApiTags('trace'),
      ApiOperation({ summary: 'Stored events, oldest first, filtered, one page at a time' }),
      ...queryParams(EventsQuery, {
        kind: 'event kinds, comma-separated (e.g. mn.range_start,mn.range_end)',
        pid: 'only events of this process',
        instance: 'only events of this service instance (mm-0, cpu1, hca0, ...)',
        op: 'only events of this operation id (mm-1/munmap#4)',
        from: 'ts lower bound, ms since the epoch (inclusive)',
        to: 'ts upper bound (inclusive)',
        offset: 'matches to skip (default 0)',
        limit: 'page size (default 1000, at most 100000)',
      }),
      ApiOkResponse({
        description: 'one page of the matching events, and how many match in all',
        schema: {
          type: 'object',
          properties: {
            total: { type: 'integer' },
            offset: { type: 'integer' },
            limit: { type: 'integer' },
            events: { type: 'array', items: EVENT_REF },
          },
        },
      }),
      ApiBadRequestResponse({ description: 'a bad query (EBADMSG)', schema: WIRE_ERROR }),
    ),
  stats: () =>
    applyDecorators(
      ApiTags('trace'),
      ApiOperation({ summary: 'Counters: events stored, rejected and dropped, by kind' }),
      ApiOkResponse({ description: 'the intake and store counters' }),
    ),
  reset: () =>
    applyDecorators(
      ApiTags('trace'),
      ApiOperation({
        summary:
          "Forget the stored trace and the counters (streams get a reset); JSON and the lab's token only",
      }),
      ApiBearerAuth(),
      ApiBody({
        required: false,
        description: 'none, or an empty object (any key: 400 EBADMSG)',
        schema: { type: 'object', additionalProperties: false },
      }),
      ApiOkResponse({
        schema: { type: 'object', properties: { cleared: { type: 'integer' } } },
      }),
      ApiUnauthorizedResponse({
        description: "no token, or not the lab's (EACCES); 403: the lab has none",
        schema: WIRE_ERROR,
      }),
      ApiUnsupportedMediaTypeResponse({
        description: 'not Content-Type: application/json (EBADMSG)',
        schema: WIRE_ERROR,
      }),
    ),
  invariants: () =>
    applyDecorators(
      ApiTags('invariants'),
      ApiOperation({ summary: 'The invariant checker over every stored event' }),
      ...queryParams(InvariantsQuery, {
        softlockupMs: 'bounded-ptlock-hold threshold in ms (default: the lab configuration)',
        maxViolations: 'violations listed per invariant (all are counted)',
      }),
      ApiOkResponse({
        description: 'one verdict per invariant, with the violating events',
        schema: {
          type: 'object',
          properties: {
            events: { type: 'integer' },
            softlockupMs: { type: 'number' },
            verdicts: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  name: { type: 'string' },
                  ok: { type: 'boolean' },
                  checked: { type: 'integer' },
                  violationCount: { type: 'integer' },
                  violations: {
                    type: 'array',
                    items: {
                      type: 'object',
                      properties: {
                        message: { type: 'string' },
                        events: { type: 'array', items: EVENT_REF },
                      },
                    },
                  },
                },
              },
            },
          },
        },
      }),
      ApiBadRequestResponse({ description: 'a bad query (EBADMSG)', schema: WIRE_ERROR }),
    ),
  stream: () =>
    applyDecorators(
      ApiTags('stream'),
      ApiOperation({
        summary: 'Server-Sent Events: every stored event as it arrives',
        description:
          'Messages: `hello` {stored, replay, from}; `events` (data: a JSON array of TraceEvents, ' +
          'id: the ts of the last one); `replayed` {events} after the replay; `reset` when the ' +
          'store is cleared; `lagged` {dropped, sent, message: "lagged, reload"} when the client ' +
          'fell too far behind (the observer does not buffer without bound), then the stream ends.',
      }),
      ApiProduces('text/event-stream'),
      ...queryParams(StreamQuery, {
        from: 'replay the stored events with ts >= from first (ms since the epoch; 0: all)',
        tail: 'replay only the last n of those',
      }),
      ApiHeader({
        name: 'Last-Event-ID',
        required: false,
        description: 'sent by a reconnecting EventSource: resume from this ts (overrides from)',
      }),
      ApiOkResponse({ description: 'an endless text/event-stream' }),
      ApiBadRequestResponse({ description: 'a bad query (EBADMSG)', schema: WIRE_ERROR }),
    ),
  dashboard: () =>
    applyDecorators(
      ApiTags('dashboard'),
      ApiOperation({
        summary: 'The live dashboard (a sequence diagram of the trace as it streams)',
      }),
      ApiProduces('text/html'),
      ApiOkResponse({ description: 'the page' }),
      ApiNotFoundResponse({ description: 'the dashboard is not built (npm run build:dashboard)' }),
    ),
  asset: () =>
    applyDecorators(
      ApiTags('dashboard'),
      ApiOperation({ summary: "The dashboard's scripts and styles" }),
      ApiParam({ name: 'file', description: 'a hashed asset name' }),
      ApiOkResponse({ description: 'the file' }),
      ApiNotFoundResponse({ description: 'no such asset' }),
    ),
};

/** Build the document of every route the app has and serve it at /api and /api-json. */
export function setupOpenApi(app: INestApplication): void {
  const config = new DocumentBuilder()
    .setTitle('mmlab observer')
    .setDescription(
      'The trace every mmlab service publishes, stored, checked and streamed: events with ' +
        'filters and paging, the invariant verdicts, a live stream, the dashboard.',
    )
    .setVersion('0.1.0')
    .addBearerAuth({
      type: 'http',
      scheme: 'bearer',
      description: "the lab's token (mmlab up prints it)",
    })
    .build();
  const factory = () => {
    const doc = SwaggerModule.createDocument(app, config);
    doc.components ??= {};
    doc.components.schemas ??= {};
    doc.components.schemas.TraceEvent = z.toJSONSchema(TraceEvent, {
      target: 'openapi-3.0',
      unrepresentable: 'any',
    }) as SchemaObject;
    return doc;
  };
  SwaggerModule.setup('api', app, factory, { jsonDocumentUrl: 'api-json' });
}
