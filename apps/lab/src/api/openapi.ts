/**
 * The lab API as OpenAPI: Swagger UI at GET /api, the document at GET /api-json. The request
 * body of POST /chaos is documented from the zod ChaosSpec that validates it.
 */
import { type INestApplication, applyDecorators } from '@nestjs/common';
import {
  ApiBadRequestResponse,
  ApiBearerAuth,
  ApiBody,
  ApiConflictResponse,
  ApiCreatedResponse,
  ApiGatewayTimeoutResponse,
  ApiNotFoundResponse,
  ApiOkResponse,
  ApiOperation,
  ApiServiceUnavailableResponse,
  ApiTags,
  ApiUnauthorizedResponse,
  ApiUnprocessableEntityResponse,
  ApiUnsupportedMediaTypeResponse,
  DocumentBuilder,
  SwaggerModule,
} from '@nestjs/swagger';
import type { SchemaObject } from '@nestjs/swagger/dist/interfaces/open-api-spec.interface';
import { z } from 'zod';
import { ChaosSpec } from '@mmlab/scenario';

const ERROR: SchemaObject = {
  type: 'object',
  properties: {
    code: { type: 'string', example: 'EINVAL' },
    message: { type: 'string' },
  },
};
const WINDOW = { $ref: '#/components/schemas/FaultWindow' };
const SPEC = { $ref: '#/components/schemas/ChaosSpec' };

const FAULT_WINDOW: SchemaObject = {
  type: 'object',
  properties: {
    id: { type: 'integer', description: '1, 2, ... in the order the faults were opened' },
    target: { type: 'string', description: 'the target as named (mm included)' },
    instance: { type: 'string', description: 'the process or subscriber hit (mm resolved)' },
    fault: { type: 'string' },
    spec: SPEC,
    label: { type: 'string' },
    startedAt: { type: 'number', description: 'epoch ms' },
    endedAt: { type: 'number', nullable: true, description: 'epoch ms; null while open' },
    healError: { type: 'string', description: 'the fault could not be healed cleanly' },
  },
};

/** What every mutating route adds: the lab's token, JSON only (libs/runtime lab-token.ts). */
const MUTATION = [
  ApiBearerAuth(),
  ApiUnauthorizedResponse({
    description: "no token, or not the lab's (EACCES); 403: the lab has none",
    schema: ERROR,
  }),
  ApiUnsupportedMediaTypeResponse({
    description: 'not Content-Type: application/json (EBADMSG)',
    schema: ERROR,
  }),
];

export const ApiDoc = {
  status: () =>
    applyDecorators(
      ApiTags('chaos'),
      ApiOperation({ summary: 'The open fault windows, and every window so far' }),
      ApiOkResponse({
        schema: {
          type: 'object',
          properties: {
            active: { type: 'array', items: WINDOW },
            windows: { type: 'array', items: WINDOW },
          },
        },
      }),
    ),
  inject: () =>
    applyDecorators(
      ApiTags('chaos'),
      ApiOperation({
        summary: 'Open a fault window on a target',
        description:
          'Callback faults (latency, hang, drop-ack, dup-ack, late-ack, crash) on a subscriber, ' +
          'asked of it over NATS; process faults (pause, kill, restart) on a process of a lab ' +
          'this API started (mmlab up). With ms the window heals by itself.',
      }),
      ApiBody({ schema: SPEC }),
      ApiCreatedResponse({ description: 'the window opened', schema: WINDOW }),
      ApiBadRequestResponse({ description: 'not a valid ChaosSpec (EBADMSG)', schema: ERROR }),
      ...MUTATION,
      ApiNotFoundResponse({
        description: 'no such target (EINVAL), no mm replica (ESRCH), no subscriber answers',
        schema: ERROR,
      }),
      ApiConflictResponse({
        description: 'the target already has that fault (EINVAL)',
        schema: ERROR,
      }),
      ApiUnprocessableEntityResponse({
        description: 'a fault this lab cannot do: a process fault without a local lab (EINVAL)',
        schema: ERROR,
      }),
      ApiGatewayTimeoutResponse({
        description: 'the subscriber did not answer (ETIMEDOUT)',
        schema: ERROR,
      }),
    ),
  heal: () =>
    applyDecorators(
      ApiTags('chaos'),
      ApiOperation({ summary: 'Heal the open windows of a target (as named or resolved), or all' }),
      ApiBody({
        required: false,
        schema: { type: 'object', properties: { target: { type: 'string' } } },
      }),
      ApiOkResponse({
        schema: { type: 'object', properties: { healed: { type: 'integer' } } },
      }),
      ApiBadRequestResponse({ description: 'a bad request (EBADMSG)', schema: ERROR }),
      ApiNotFoundResponse({
        description: 'no such target in this lab, and no window on it (EINVAL)',
        schema: ERROR,
      }),
      ...MUTATION,
    ),
  targets: () =>
    applyDecorators(
      ApiTags('lab'),
      ApiOperation({ summary: 'What a fault can be aimed at' }),
      ApiOkResponse({
        schema: {
          type: 'object',
          properties: {
            local: { type: 'boolean', description: 'a lab this API started: process faults work' },
            targets: { type: 'array', items: { type: 'string' } },
            subscribers: { type: 'array', items: { type: 'string' } },
            processes: { type: 'array', items: { type: 'string' } },
            pids: { type: 'object', additionalProperties: { type: 'integer' } },
          },
        },
      }),
    ),
  health: () =>
    applyDecorators(
      ApiTags('lab'),
      ApiOperation({ summary: 'Up while the NATS link is' }),
      ApiOkResponse({
        schema: {
          type: 'object',
          properties: {
            status: { type: 'string', example: 'ok' },
            nats: { type: 'string', example: 'connected' },
            active: { type: 'integer' },
          },
        },
      }),
      ApiServiceUnavailableResponse({ description: 'no NATS link' }),
    ),
};

export function setupOpenApi(app: INestApplication): void {
  const config = new DocumentBuilder()
    .setTitle('mmlab lab API')
    .setDescription(
      "The lab's nemesis over HTTP: open fault windows on subscribers and processes, heal " +
        'them, list them (what `mmlab chaos` talks to).',
    )
    .setVersion('0.1.0')
    .addBearerAuth({
      type: 'http',
      scheme: 'bearer',
      description: "the lab's token (mmlab up prints it)",
    })
    .build();
  SwaggerModule.setup(
    'api',
    app,
    () => {
      const doc = SwaggerModule.createDocument(app, config);
      doc.components ??= {};
      doc.components.schemas ??= {};
      doc.components.schemas.ChaosSpec = z.toJSONSchema(ChaosSpec, {
        target: 'openapi-3.0',
        io: 'input',
        unrepresentable: 'any',
      }) as SchemaObject;
      doc.components.schemas.FaultWindow = FAULT_WINDOW;
      return doc;
    },
    { jsonDocumentUrl: 'api-json' },
  );
}
