/** A page-global hook for measurements: browser tests read `window.__featmonStats`. */

export interface FeatmonStats {
  /** Snapshots applied (drawn) so far, by all views on the page. */
  applied: number;
  /** Milliseconds the last apply took (performance.now() around it). */
  lastApplyMs: number;
}

declare global {
  interface Window {
    __featmonStats?: FeatmonStats;
  }
}

export function featmonStats(): FeatmonStats {
  const w = window;
  if (!w.__featmonStats) w.__featmonStats = { applied: 0, lastApplyMs: 0 };
  return w.__featmonStats;
}

export function recordApply(ms: number): void {
  const stats = featmonStats();
  stats.applied += 1;
  stats.lastApplyMs = ms;
}
