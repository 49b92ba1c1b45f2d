/**
 * Activation-value histograms of the selected features: one bar trace per feature over bin-index
 * positions. Bin 0 is "inactive" (value <= threshold); bins 1..E-1 are the kernel's log-spaced
 * bins, labelled on the axis by their edge values.
 */

import type Plotly from "plotly.js-basic-dist-min";
import { ChartFrame } from "./chartFrame";
import type { ViewContext } from "./component";
import { setText } from "./dom";
import { formatEdge, formatInt, formatPercent } from "./format";
import { PALETTE, type Theme, baseLayout, countAxis, themeKey, themeOf } from "./plot";
import type { ValueHistogram } from "./protocol";

export const INACTIVE_LABEL = "inactive";
/** Axis ticks every this many edges (2 octaves with the kernel's 4 bins per octave). */
const TICK_EVERY = 8;
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
  for (let k = TICK_EVERY; k < edges.length; k += TICK_EVERY) {
    tickvals.push(k + 0.5);
    ticktext.push(formatEdge(edges[k]!));
  }
  return { tickvals, ticktext };
}

export function valuesFigure(
  values: readonly ValueHistogram[],
  edges: Float32Array,
  colors: ReadonlyMap<number, string>,
  logY: boolean,
  theme: Theme,
): { data: Plotly.Data[]; layout: Partial<Plotly.Layout> } {
  const labels = valueBinLabels(edges);
  const x = valueBinX(labels.length);
  const data: Plotly.Data[] = values.map((v) => {
    const total = v.counts.reduce((a, b) => a + b, 0);
    const inactive = total > 0 ? v.counts[0]! / total : NaN;
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
  const layout: Partial<Plotly.Layout> = {
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
        : `${n} selected · bin 0 counts tokens at or below the threshold`,
    );
  }

  override draw(force = false): void {
    const s = this.snapshot;
    if (!s) return;
    const values = s.values;
    const theme = themeOf(this.el);
    const key =
      `${this.logY.checked}|${themeKey(theme)}|${s.valueEdges.join(",")}|` +
      values.map((v) => `${v.feature}:${v.counts.join(",")}`).join(";");
    if (!force && key === this.lastKey) return;
    this.lastKey = key;
    this.assignColors(values.map((v) => v.feature));
    const fig = valuesFigure(values, s.valueEdges, this.colors, this.logY.checked, theme);
    this.plot.draw(fig.data, fig.layout);
  }
}
