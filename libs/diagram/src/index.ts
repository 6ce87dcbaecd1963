export * from './types';
export { DEFAULT_CAP, DiagramBuilder, buildDiagram, type BuilderOptions } from './builder';
export { describeEvent, eventRange, summarizeEvent } from './describe';
export {
  parseAddrRange,
  parseFilterInputs,
  sameFilter,
  type FilterInputs,
  type ParsedFilter,
} from './filter';
export * from './layout';
export {
  LifelineSet,
  compareLifelines,
  kindOfAgent,
  kindOfService,
  naturalCompare,
} from './lifelines';
export { RateMeter, markExpected, type RunExpectation } from './live';
export { ReorderBuffer } from './reorder';
export { clip, renderSequenceSvg, type SvgOptions } from './svg';
export { syntheticTrace, type SyntheticOptions } from './synthetic';
