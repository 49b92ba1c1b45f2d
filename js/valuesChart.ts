/**
 * Activation-value histograms of the selected features: one bar trace per feature over bin-index
 * positions, from each feature's distribution since the last reset (so a feature selected after
 * the fact shows everything it did). Bin 0 is "inactive" (value <= threshold), set apart; bins
 * 1..E-1 are the kernel's log bins (two per octave: 2^e and 1.5 * 2^e), labelled on the axis by
 * their edge values. Each feature's p50 / p90 / p99 (from its panel) are marked by dotted
 * vertical lines in its colour, labelled; the note gives each one's inactive share.
 */

import type Plotly from "plotly.js-basic-dist-min";
import { ChartFrame } from "./chartFrame";
import type { ViewContext } from "./component";
import { setText } from "./dom";
import { formatEdge, formatInt, formatPercent } from "./format";
import { PALETTE, type Theme, baseLayout, countAxis, themeKey, themeOf } from "./plot";
import type { ValueHistogram } from "./protocol";

export const INACTIVE_LABEL = "inactive";
/** Axis ticks every this many edges (2 octaves with the kernel's 2 bins per octave). */
const TICK_EVERY = 4;
/** x position of the inactive bin: set apart, left of the log bins (which sit at 1..E-1). */
export const INACTIVE_X = -3;

/** x positions of the bins: the inactive bin, then 1..E-1. */
export function valueBinX(bins: number): number[] {
  return Array.from({ length: bins }, (_, i) => (i === 0 ? INACTIVE_X : i));
}

/** Hover labels of the bins: inactive, "< e1", "[e(j-1), e(j))", "≥ e(E-2)". */
export function valueBinLabels(edges: Float32Array): string[] {
  const labels = [`${INACTIVE_LABEL} (≤ threshold)`];
  const last = edges.length - 1; // log bins 1..last
  for (let j = 1; j <= last; j++) {
    const lo = edges[j - 1]!;
    const hi = edges[j]!;
    if (j === 1 && last > 1) labels.push(`< ${formatEdge(hi)}`);
    else if (j === last && last > 1) labels.push(`≥ ${formatEdge(lo)}`);
    else labels.push(`${formatEdge(lo)} – ${formatEdge(hi)}`);
  }
  return labels;
}

/**
 * Tick positions and labels: the inactive bin, then edge values; edge k sits between log bins k
 * and k+1 (the first edge is left out: the inactive label stands next to it).
 */
export function valueTicks(edges: Float32Array): { tickvals: number[]; ticktext: string[] } {
  const tickvals = [INACTIVE_X];
  const ticktext = [INACTIVE_LABEL];
  // From edge 1 (2^-8): every tick a power of two.
  for (let k = 1; k < edges.length; k += TICK_EVERY) {
    tickvals.push(k + 0.5);
    ticktext.push(formatEdge(edges[k]!));
  }
  return { tickvals, ticktext };
}

/** Quantiles of one feature: [q, value] pairs (value null: not finite). */
export type Quantiles = readonly (readonly [number, number | null])[];

/**
 * x position of `value` on the bin axis: log bin j (edges[j-1] .. edges[j]) spans j - 0.5 ..
 * j + 0.5, linear within it; the open first and last bins clamp. NaN for no value.
 */
export function valueX(value: number | null, edges: Float32Array): number {
  const last = edges.length - 1;
  if (value === null || !Number.isFinite(value) || last < 1) return NaN;
  for (let j = 1; j <= last; j++) {
    const lo = edges[j - 1]!;
    const hi = edges[j]!;
    if (value < hi || j === last) {
      const t = Math.min(1, Math.max(0, (value - lo) / (hi - lo)));
      return j - 0.5 + t;
    }
  }
  return NaN;
}

/** Dotted vertical lines and labels at each feature's quantiles, in its colour. */
export function quantileMarks(
  values: readonly ValueHistogram[],
  quantiles: ReadonlyMap<number, Quantiles>,
  edges: Float32Array,
  colors: ReadonlyMap<number, string>,
): { shapes: Partial<Plotly.Shape>[]; annotations: Partial<Plotly.Annotations>[] } {
  const shapes: Partial<Plotly.Shape>[] = [];
  const annotations: Partial<Plotly.Annotations>[] = [];
  values.forEach((v, i) => {
    const color = colors.get(v.feature) ?? PALETTE[0]!;
    for (const [q, value] of quantiles.get(v.feature) ?? []) {
      const x = valueX(value, edges);
      if (!Number.isFinite(x)) continue;
      shapes.push({
        type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: { color, width: 1, dash: "dot" },
      });
      annotations.push({
        x, xref: "x", y: 1 - 0.07 * i, yref: "paper", yanchor: "bottom", showarrow: false,
        text: `p${Math.round(q * 100)}`, font: { size: 9, color },
        hovertext: `feature ${v.feature} p${Math.round(q * 100)} ≈ ${formatEdge(value ?? NaN)}`,
      });
    }
  });
  return { shapes, annotations };
}

/** Share of a feature's counted values that were inactive (NaN when none were counted). */
export function inactiveShare(v: ValueHistogram): number {
  const total = v.counts.reduce((a, b) => a + b, 0);
  return total > 0 ? v.counts[0]! / total : NaN;
}

export function valuesFigure(
  values: readonly ValueHistogram[],
  edges: Float32Array,
  colors: ReadonlyMap<number, string>,
  logY: boolean,
  theme: Theme,
  quantiles: ReadonlyMap<number, Quantiles> = new Map(),
): { data: Plotly.Data[]; layout: Partial<Plotly.Layout> } {
  const labels = valueBinLabels(edges);
  const x = valueBinX(labels.length);
  const data: Plotly.Data[] = values.map((v) => {
    const total = v.counts.reduce((a, b) => a + b, 0);
    const inactive = inactiveShare(v);
    return {
      type: "bar",
      name: `#${v.feature}`,
      x: x.slice(),
      y: Array.from(v.counts),
      customdata: labels.slice(),
      marker: { color: colors.get(v.feature) ?? PALETTE[0]! },
      hovertemplate:
        `feature ${v.feature}<br>%{customdata}<br>%{y} tokens` +
        `<br>${formatPercent(inactive)} inactive of ${formatInt(total)}<extra></extra>`,
    } satisfies Plotly.Data;
  });
  const { tickvals, ticktext } = valueTicks(edges);
  const marks = quantileMarks(values, quantiles, edges, colors);
  const layout: Partial<Plotly.Layout> = {
    shapes: marks.shapes,
    annotations: marks.annotations,
    ...baseLayout(theme, "values"),
    barmode: "group",
    showlegend: true,
    legend: { orientation: "h", y: 1.12, x: 0 },
    margin: { l: 50, r: 10, t: 30, b: 60 },
    xaxis: {
      title: { text: "activation value" },
      tickvals,
      ticktext,
      range: [INACTIVE_X - 1, labels.length - 0.5],
      gridcolor: theme.grid,
      zeroline: false,
    },
    yaxis: countAxis(theme, "tokens", logY),
  };
  return { data, layout };
}

export class ValuesChart extends ChartFrame {
  private readonly colors = new Map<number, string>();
  private lastKey = "";

  constructor(ctx: ViewContext, requestDraw?: () => void) {
    super(
      ctx,
      {
        label: "Activation values",
        title: "Activation values of selected features",
        plotTestId: "chart-values",
        plotLabel: "Activation value histograms of selected features",
        noteTestId: "values-note",
        logYTestId: "values-log-y",
        logYDefault: true,
      },
      requestDraw,
    );
  }

  /** Stable colours: a feature keeps its colour while shown; new ones take a free colour. */
  private assignColors(features: readonly number[]): void {
    for (const f of [...this.colors.keys()]) if (!features.includes(f)) this.colors.delete(f);
    for (const f of features) {
      if (this.colors.has(f)) continue;
      const used = new Set(this.colors.values());
      const free = PALETTE.find((c) => !used.has(c)) ?? PALETTE[f % PALETTE.length]!;
      this.colors.set(f, free);
    }
  }

  protected override updateNote(): void {
    const n = this.snapshot ? this.snapshot.values.length : 0;
    setText(
      this.note,
      n === 0
        ? "Click a feature in the table to show its activation histogram (up to 8)."
        : `${n} selected, since the last reset · inactive (≤ threshold): ` +
          this.snapshot!.values.map((v) => `#${v.feature} ${formatPercent(inactiveShare(v))}`)
            .join(", ") +
          " · dotted: p50 / p90 / p99 of the active values",
    );
  }

  override draw(force = false): void {
    const s = this.snapshot;
    if (!s) return;
    const values = s.values;
    const theme = themeOf(this.el);
    const quantiles = new Map<number, Quantiles>();
    for (const p of s.panels) if (p.quantiles) quantiles.set(p.feature, p.quantiles);
    const key =
      `${this.logY.checked}|${themeKey(theme)}|${s.valueEdges.join(",")}|` +
      values.map((v) => `${v.feature}:${v.counts.join(",")}`).join(";") +
      `|${JSON.stringify([...quantiles])}`;
    if (!force && key === this.lastKey) return;
    this.lastKey = key;
    this.assignColors(values.map((v) => v.feature));
    const fig = valuesFigure(values, s.valueEdges, this.colors, this.logY.checked, theme,
      quantiles);
    this.plot.draw(fig.data, fig.layout);
  }
}
