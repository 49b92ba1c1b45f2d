/**
 * Firing-frequency histogram across features: log10(active_ratio) bins from the kernel, plus
 * never-fired features as their own labelled bar left of the log axis, and never-seen as text.
 */

import type Plotly from "plotly.js-basic-dist-min";
import { ChartFrame } from "./chartFrame";
import type { ViewContext } from "./component";
import { setText } from "./dom";
import { formatInt } from "./format";
import { baseLayout, countAxis, themeKey, themeOf } from "./plot";

export const NEVER_FIRED_LABEL = "never fired";

function ratioLabel(log10: number): string {
  const r = 10 ** log10;
  if (r >= 0.01) return String(Number(r.toPrecision(3)));
  return r.toExponential(2).replace(/\.?0+e/, "e");
}

export interface FrequencyFigure {
  data: Plotly.Data[];
  layout: Partial<Plotly.Layout>;
}

/** The figure for a snapshot (pure: new arrays every call). */
export function frequencyFigure(
  edges: Float32Array,
  counts: Int32Array,
  neverFired: number,
  logY: boolean,
  theme: ReturnType<typeof themeOf>,
): FrequencyFigure {
  const n = counts.length;
  const x: number[] = [];
  const width: number[] = [];
  const labels: string[] = [];
  for (let i = 0; i < n; i++) {
    const a = edges[i]!;
    const b = edges[i + 1]!;
    x.push((a + b) / 2);
    width.push(b - a);
    const lo = i === 0 ? "≤" : ratioLabel(a) + " –";
    labels.push(`${lo} ${ratioLabel(b)}`);
  }
  const first = n > 0 ? edges[0]! : -8;
  const last = n > 0 ? edges[n]! : 0;
  const binWidth = n > 0 ? (last - first) / n : 0.25;
  const neverX = first - 4 * binWidth;
  const tickvals: number[] = [neverX];
  const ticktext: string[] = [NEVER_FIRED_LABEL];
  for (let k = Math.ceil(first); k <= Math.floor(last); k++) {
    tickvals.push(k);
    ticktext.push(k === 0 ? "1" : `1e${k}`);
  }
  const data: Plotly.Data[] = [
    {
      type: "bar",
      name: "fired",
      x,
      y: Array.from(counts),
      width,
      customdata: labels,
      marker: { color: theme.accent },
      hovertemplate: "firing frequency %{customdata}<br>%{y} features<extra></extra>",
    },
    {
      type: "bar",
      name: NEVER_FIRED_LABEL,
      x: [neverX],
      y: [neverFired],
      width: [binWidth * 3],
      marker: { color: theme.muted },
      hovertemplate: `${NEVER_FIRED_LABEL}: %{y} features<extra></extra>`,
    },
  ];
  const layout: Partial<Plotly.Layout> = {
    ...baseLayout(theme, "frequency"),
    showlegend: false,
    xaxis: {
      title: { text: "firing frequency (active ratio, log scale)" },
      tickvals,
      ticktext,
      gridcolor: theme.grid,
      zeroline: false,
    },
    yaxis: { ...countAxis(theme, "features", logY), rangemode: "tozero" },
  };
  return { data, layout };
}

export class FrequencyChart extends ChartFrame {
  private lastKey = "";

  constructor(ctx: ViewContext, requestDraw?: () => void) {
    super(
      ctx,
      {
        label: "Firing frequency",
        title: "Firing frequency across features",
        plotTestId: "chart-frequency",
        plotLabel: "Histogram of feature firing frequencies",
        noteTestId: "freq-summary",
        logYTestId: "freq-log-y",
        logYDefault: false,
      },
      requestDraw,
    );
  }

  protected override updateNote(): void {
    const s = this.snapshot;
    if (!s) {
      setText(this.note, "no data yet");
      return;
    }
    const fired = s.frequencyCounts.reduce((a, b) => a + b, 0);
    setText(
      this.note,
      `${formatInt(fired)} fired · ${formatInt(s.neverFired)} never fired · ` +
        `${formatInt(s.neverSeen)} never seen`,
    );
  }

  override draw(force = false): void {
    const s = this.snapshot;
    if (!s) return;
    const theme = themeOf(this.el);
    const key =
      `${this.logY.checked}|${themeKey(theme)}|${s.neverFired}|` +
      `${s.frequencyCounts.join(",")}|${s.frequencyEdges.join(",")}`;
    if (!force && key === this.lastKey) return;
    this.lastKey = key;
    const fig = frequencyFigure(s.frequencyEdges, s.frequencyCounts, s.neverFired, this.logY.checked, theme);
    this.plot.draw(fig.data, fig.layout);
  }
}
