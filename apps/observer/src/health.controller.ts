/** GET /health: up while the intake's NATS connection is (a readiness/liveness probe). */
import { Controller, Get, HttpException, HttpStatus } from '@nestjs/common';
import { TraceIntake } from './trace-intake';

@Controller()
export class HealthController {
  constructor(private readonly intake: TraceIntake) {}

  @Get('health')
  health(): { status: 'ok' } {
    if (!this.intake.healthy)
      throw new HttpException(
        { status: 'unavailable', nats: this.intake.nc.isClosed() ? 'closed' : 'disconnected' },
        HttpStatus.SERVICE_UNAVAILABLE,
      );
    return { status: 'ok' };
  }
}
