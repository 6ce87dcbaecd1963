/** observerSync over NATS: the lab's barrier before it reads the verdict. */
import { Controller } from '@nestjs/common';
import { Rpc } from '@mmlab/runtime';
import { TraceIntake } from './trace-intake';

@Controller()
export class SyncController {
  constructor(private readonly intake: TraceIntake) {}

  /** Answers once every event delivered to the intake before the request is stored (see TraceIntake.sync). */
  @Rpc('observerSync')
  async sync(): Promise<{ events: number }> {
    return { events: await this.intake.sync() };
  }
}
