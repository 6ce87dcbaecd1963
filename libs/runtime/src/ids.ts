/** Operation ids: `<instance>/<counter>`, unique in a lab, readable in traces. */
export class OpIds {
  private n = 0;
  constructor(private readonly instance: string) {}
  next(kind: string): string {
    return `${this.instance}/${kind}#${++this.n}`;
  }
}
