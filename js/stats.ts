/** A page-global hook for measurements: browser tests read `window.__featmonStats`. */

export interface FeatmonStats {
  /** Snapshots applied (drawn) so far, by all views on the page. */
  applied: number;
  /** Milliseconds the last apply took (performance.now() around it). */
  lastApplyMs: number;
  /** Milliseconds the last chart redraw took (charts redraw after the apply, rate-limited). */
  lastChartMs: number;
  /** Chart redraws so far, by all views on the page. */
  chartDraws: number;
}

declare global {
  interface Window {
    __featmonStats?: FeatmonStats;
  }
}

export function featmonStats(): FeatmonStats {
  const w = window;
  if (!w.__featmonStats) w.__featmonStats = { applied: 0, lastApplyMs: 0, lastChartMs: 0, chartDraws: 0 };
  const stats = w.__featmonStats;
  // A page may install its own object (with only applied/lastApplyMs): add the chart fields.
  if (typeof stats.lastChartMs !== "number") stats.lastChartMs = 0;
  if (typeof stats.chartDraws !== "number") stats.chartDraws = 0;
  return stats;
}

export function recordApply(ms: number): void {
  const stats = featmonStats();
  stats.applied += 1;
  stats.lastApplyMs = ms;
}

export function recordChart(ms: number): void {
  const stats = featmonStats();
  stats.chartDraws += 1;
  stats.lastChartMs = ms;
}
