import { describe, expect, it } from 'vitest';
import { buildDiagram } from './builder';
import { loadTrace, loadViolations } from './fixtures/load';
import { renderSequenceSvg } from './svg';

describe('renderSequenceSvg', () => {
  const model = buildDiagram(loadTrace('odp-munmap'));

  it('draws a standalone SVG: lifelines, the invalidation group, arrows, bars and rows', () => {
    const svg = renderSequenceSvg(model, { title: 'odp-munmap <patched>' });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).not.toMatch(/<script|href="http/);
    expect(svg).toContain('odp-munmap &lt;patched&gt;');
    for (const id of ['mm-0', 'mm-1', 'cpu0', 'cpu1', 'hca0'])
      expect(svg).toContain(`class="lifeline" data-instance="${id}"`);
    expect(svg).toContain('class="inv-group" data-inv="mm-1/munmap#4~1" data-kind="range"');
    expect(svg.match(/class="msg msg-mn-call"/g)).toHaveLength(3);
    expect(svg.match(/class="msg msg-shootdown"/g)).toHaveLength(1);
    expect(svg.match(/class="bar bar-ptl"/g)).toHaveLength(1);
    expect(svg.match(/class="bar bar-sleep"/g)).toHaveLength(3);
    expect(svg.match(/<circle [^>]*r="3"/g)).toHaveLength(model.rows.length);
    // balanced tags: every opened g/text/title is closed
    for (const tag of ['g', 'text', 'title', 'marker'])
      expect(svg.split(`<${tag}`).length).toBe(svg.split(`</${tag}>`).length);
  });

  it('height follows the rows; maxRows cuts and says so', () => {
    const height = (s: string) => Number(/height="([\d.]+)"/.exec(s)![1]);
    const cut = renderSequenceSvg(model, { maxRows: 10 });
    expect(cut).toContain(`… ${model.rows.length - 10} more events not drawn`);
    expect(height(cut)).toBeLessThan(height(renderSequenceSvg(model)));
    expect(cut.match(/<circle [^>]*r="3"/g)).toHaveLength(10);
  });

  it('marks violations and flags their group', () => {
    const m = buildDiagram(loadTrace('legacy-cow'), { violations: loadViolations('legacy-cow') });
    const svg = renderSequenceSvg(m, { selectedInv: 'mm-1/fault#6~2', labels: false });
    expect(svg.match(/class="marker marker-violation"/g)).toHaveLength(4);
    expect(svg.match(/class="marker marker-guard"/g)).toHaveLength(2);
    expect(svg).toContain('no-sleep-under-ptlock: invalidate_page of pid 1');
    expect(svg).toMatch(/data-inv="mm-1\/fault#6~2"[^]*?stroke="#dc2626" stroke-width="2"/);
  });

  it('an empty model is still a valid picture', () => {
    const svg = renderSequenceSvg(buildDiagram([]));
    expect(svg).toMatch(/^<svg[^]*<\/svg>$/);
  });
});
