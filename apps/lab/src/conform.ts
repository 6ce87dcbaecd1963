/**
 * The conformance battery of `mmlab conform --subscriber NAME`: scenarios that drive an
 * external device (a subscriber of kind external, libs/subscriber Device) through every path
 * that invalidates its translations, each judged by the scenario runner and the invariant
 * checker like any `mmlab run`. Every scenario expects no violation and every step ok: a device
 * that acks before it stopped using a page, maps inside an invalidation, or reads stale data
 * fails the scenario that provokes it, with the rule's name and the events.
 *
 * Built as scenario documents (JSON is YAML) for the running lab's own config, so they parse
 * and are checked exactly as a file would be.
 */
import type { ScenarioConfig } from '@mmlab/scenario';

type StepDoc = Record<string, unknown>;

export interface ConformScenario {
  name: string;
  /** what it exercises (the kernel path) */
  about: string;
  steps: StepDoc[];
  /** why the lab cannot run it (e.g. reclaim without swap): reported as skipped */
  skip?: string;
}

/**
 * The battery for device dev on a lab running config. Each scenario makes its own process:
 * a buffer of 4 pages, written by the CPU, attached and read by the device.
 */
export function conformBattery(dev: string, config: ScenarioConfig): ConformScenario[] {
  const on = (op: string, more: StepDoc = {}): StepDoc => ({ op, dev, process: 'p', ...more });
  const cpuWrite = (page: number, value: number, process = 'p'): StepDoc => ({
    op: 'cpu.write',
    cpu: 0,
    process,
    addr: 'buf',
    page,
    value,
  });
  const cpuRead = (page: number, expect: number, process = 'p', addr = 'buf'): StepDoc => ({
    op: 'cpu.read',
    cpu: 0,
    process,
    addr,
    page,
    expect,
  });
  const read = (page: number, expect: number, addr = 'buf') =>
    on('dev.read', { addr, page, expect });
  const fails = (page: number, code: string, addr = 'buf') =>
    on('dev.read', { addr, page, expectError: code });
  const write = (page: number, value: number) => on('dev.write', { addr: 'buf', page, value });
  const prelude: StepDoc[] = [
    { op: 'process.create', as: 'p' },
    { op: 'mmap', process: 'p', pages: 4, prot: 'rw', as: 'buf' },
    cpuWrite(0, 11),
    cpuWrite(1, 12),
    on('dev.attach'),
    read(0, 11),
    write(1, 22),
    read(2, 0),
  ];
  const range = (pages = 4) => ({ process: 'p', addr: 'buf', pages });
  const slowMunmap = [
    { op: 'munmap', process: 'p', addr: 'buf', page: 2, pages: 2 },
    read(0, 11),
    fails(2, 'EFAULT'),
  ];
  return [
    {
      name: 'fork-cow',
      about: 'fork (copy_page_range) then COW in the parent (do_wp_page)',
      steps: [
        ...prelude,
        { op: 'fork', process: 'p', as: 'c' },
        cpuWrite(0, 33),
        read(0, 33),
        cpuRead(0, 11, 'c'),
        write(1, 44),
        cpuRead(1, 44),
        cpuRead(1, 22, 'c'),
        { op: 'exit', process: 'c' },
      ],
    },
    {
      name: 'munmap',
      about: 'munmap (zap_page_range): the pages are freed after the ack',
      steps: [
        ...prelude,
        { op: 'munmap', ...range(), page: 0 },
        fails(0, 'EFAULT'),
        fails(1, 'EFAULT'),
      ],
    },
    {
      name: 'mprotect',
      about: 'mprotect (change_protection): read-only, then none, then rw again',
      steps: [
        ...prelude,
        { op: 'mprotect', ...range(), prot: 'r' },
        on('dev.write', { addr: 'buf', page: 0, value: 5, expectError: 'EFAULT' }),
        read(1, 22),
        { op: 'mprotect', ...range(1), prot: 'none' },
        fails(0, 'EFAULT'),
        { op: 'mprotect', ...range(), prot: 'rw' },
        write(0, 6),
        cpuRead(0, 6),
      ],
    },
    {
      name: 'mremap',
      about: 'mremap (move_page_tables): the data is found at the new place',
      steps: [
        ...prelude,
        { op: 'mremap', ...range(), newPages: 8, as: 'moved' },
        read(1, 22, 'moved'),
        read(0, 11, 'moved'),
        cpuRead(1, 22, 'p', 'moved'),
      ],
    },
    {
      name: 'madvise',
      about: 'madvise(MADV_DONTNEED) (zap_page_range): anonymous pages read as zero after',
      steps: [
        ...prelude,
        { op: 'madvise', ...range(), advice: 'dontneed' },
        read(0, 0),
        read(1, 0),
        cpuRead(1, 0),
      ],
    },
    {
      name: 'exit',
      about: 'exit (exit_mmap): release, then every page freed',
      steps: [...prelude, { op: 'exit', process: 'p' }, fails(0, 'EFAULT')],
    },
    {
      name: 'reclaim',
      about: 'reclaim (try_to_unmap_one): pages swapped out under the device, faulted back',
      steps: [...prelude, { op: 'reclaim', pages: config.frames }, read(0, 11), read(1, 22)],
      ...(!config.swapSlots && { skip: 'the lab has no swap (swapSlots 0): nothing to reclaim' }),
    },
    {
      name: 'ksm',
      about: 'KSM merge (write_protect_page, replace_page) and the COW that breaks it',
      steps: [
        ...prelude,
        cpuWrite(2, 11),
        { op: 'ksm.merge', ...range() },
        read(0, 11),
        write(0, 7),
        cpuRead(2, 11),
        cpuRead(0, 7),
      ],
    },
    {
      name: 'slow-callbacks',
      about: 'a slow device: every callback 150 ms late (latency fault)',
      steps: [
        ...prelude,
        { op: 'chaos', target: dev, fault: 'latency', distribution: 150 },
        ...slowMunmap,
        { op: 'heal', target: dev },
      ],
    },
    {
      name: 'paused-callbacks',
      about: 'a device stalled in invalidate_range_start for 400 ms (hang fault), mm waits',
      steps: [
        ...prelude,
        {
          op: 'chaos',
          target: dev,
          fault: 'hang',
          ms: 400,
          callbacks: ['invalidate_range_start'],
        },
        ...slowMunmap,
        { op: 'heal', target: dev },
      ],
    },
    {
      name: 'resends',
      about: "resent callbacks: the device's acks duplicated, then one dropped (mm resends it)",
      steps: [
        ...prelude,
        { op: 'chaos', target: dev, fault: 'dup-ack' },
        { op: 'mprotect', ...range(), prot: 'r' },
        { op: 'heal', target: dev },
        {
          op: 'chaos',
          target: dev,
          fault: 'drop-ack',
          ms: 300,
          callbacks: ['invalidate_range_start'],
        },
        ...slowMunmap,
        { op: 'heal', target: dev },
      ],
    },
  ];
}

/** The scenario document of one battery entry (JSON, which is YAML). */
export function conformDocument(s: ConformScenario, dev: string, config: ScenarioConfig): string {
  const subscribers = [
    ...(config.subscribers ?? []).filter((x) => x.name !== dev),
    { name: dev, kind: 'external' },
  ];
  return JSON.stringify(
    {
      name: `conform-${dev}-${s.name}`,
      config: { ...config, subscribers },
      steps: s.steps,
      expect: { violations: [] },
    },
    null,
    1,
  );
}
