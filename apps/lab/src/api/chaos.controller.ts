/** The lab API's routes: the nemesis's windows, inject, heal, the targets, health. */
import {
  Body,
  Controller,
  Get,
  HttpCode,
  Inject,
  Post,
  ServiceUnavailableException,
} from '@nestjs/common';
import { Mutex } from 'async-mutex';
import { z } from 'zod';
import { ChaosSpec, ChaosTarget } from '@mmlab/scenario';
import type { FaultWindow } from '../nemesis';
import { parseBody, unknownTarget } from './errors';
import { ApiDoc } from './openapi';
import type { LabTargets, TargetList } from './targets';

/** What the API needs of a Nemesis (a stub in the HTTP-mapping unit tests). */
export interface NemesisApi {
  windows(): FaultWindow[];
  active(): FaultWindow[];
  inject(spec: ChaosSpec): Promise<FaultWindow>;
  heal(target?: string): Promise<number>;
}

/** What the API needs of LabTargets. */
export type TargetsApi = Pick<LabTargets, 'list' | 'problem'>;

/** Whether the lab's NATS link is usable (GET /health). */
export type NatsLink = () => { up: boolean; state: string };

export const NEMESIS = Symbol('NEMESIS');
export const TARGETS = Symbol('TARGETS');
export const NATS_LINK = Symbol('NATS_LINK');

export const HealRequest = z.strictObject({ target: ChaosTarget.optional() });

export interface ChaosState {
  active: FaultWindow[];
  windows: FaultWindow[];
}

@Controller()
export class ChaosController {
  /** One change at a time: the nemesis checks for conflicting windows before it awaits. */
  private readonly changes = new Mutex();

  constructor(
    @Inject(NEMESIS) private readonly nemesis: NemesisApi,
    @Inject(TARGETS) private readonly targets: TargetsApi,
    @Inject(NATS_LINK) private readonly nats: NatsLink,
  ) {}

  @Get('chaos')
  @ApiDoc.status()
  status(): ChaosState {
    return { active: this.nemesis.active(), windows: this.nemesis.windows() };
  }

  @Post('chaos')
  @HttpCode(201)
  @ApiDoc.inject()
  async inject(@Body() body: unknown): Promise<FaultWindow> {
    const spec = parseBody(ChaosSpec, body, 'fault spec');
    return this.changes.runExclusive(async () => {
      const problem = await this.targets.problem(spec);
      if (problem) throw unknownTarget(problem);
      return this.nemesis.inject(spec);
    });
  }

  @Post('heal')
  @HttpCode(200)
  @ApiDoc.heal()
  async heal(@Body() body: unknown): Promise<{ healed: number }> {
    const { target } = parseBody(HealRequest, body, 'heal request');
    // a target with no window and not in this lab is a typo, not "nothing to heal" (fuzz-http:
    // POST /heal {"target":"nosuch"} answered 200 {healed: 0}); checked before the lock (a
    // window opened meanwhile is healed all the same)
    if (target !== undefined && target !== 'mm' && !this.hasWindow(target)) {
      // the list pings the lab: when it cannot be had (NATS slow or down), heal what it can
      // (nothing) rather than answer 5xx for a request that changes nothing either way
      const targets = await this.targets.list().then(
        (l) => l.targets,
        () => null,
      );
      if (targets && !targets.includes(target))
        throw unknownTarget(
          `no target "${target}" in this lab, and no window on it (targets: ${targets.join(', ')})`,
        );
    }
    return this.changes.runExclusive(async () => ({ healed: await this.nemesis.heal(target) }));
  }

  /** Whether a window (open or closed) was aimed at target, as named or resolved. */
  private hasWindow(target: string): boolean {
    return this.nemesis.windows().some((w) => w.target === target || w.instance === target);
  }

  @Get('targets')
  @ApiDoc.targets()
  list(): Promise<TargetList> {
    return this.targets.list();
  }

  @Get('health')
  @ApiDoc.health()
  health(): { status: 'ok'; nats: string; active: number } {
    const link = this.nats();
    // 503 without NATS: the nemesis can neither reach a subscriber nor record a window
    if (!link.up) throw new ServiceUnavailableException({ status: 'down', nats: link.state });
    return { status: 'ok', nats: link.state, active: this.nemesis.active().length };
  }
}
