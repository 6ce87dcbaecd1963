/**
 * A tagged template for HTML that escapes by default: every interpolated value is text
 * (escaped) unless it is already an `Html` fragment (the result of another `html` template,
 * or markup we produced ourselves and wrap with `trustedHtml`, such as the plots' SVG).
 * Arrays are concatenated; null, undefined and false render as nothing, so
 * `${cond && html`...`}` and `${items.map((i) => html`<li>${i}</li>`)}` read naturally.
 */

/** A fragment of markup that is already safe to emit as is. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export type HtmlValue = Html | string | number | boolean | null | undefined | readonly HtmlValue[];

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text as HTML text or attribute content. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function render(v: HtmlValue): string {
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return (v as readonly HtmlValue[]).map(render).join('');
  if (v === null || v === undefined || v === false) return '';
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new Html(out);
}

/** Markup produced by this program (an SVG renderer's output), emitted without escaping. */
export const trustedHtml = (markup: string): Html => new Html(markup);
