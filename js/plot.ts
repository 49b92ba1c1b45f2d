/** Shared plotly plumbing: theme colours from JupyterLab CSS variables, react/purge, resizing. */

import Plotly from "plotly.js-basic-dist-min";

export interface Theme {
  font: string;
  grid: string;
  accent: string;
  muted: string;
}

/** Feature colours; a chart hands them out so that shown features never share one. */
export const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#17becf",
  "#bcbd22",
  "#7f7f7f",
];

function cssVar(style: CSSStyleDeclaration, name: string, fallback: string): string {
  const value = style.getPropertyValue(name).trim();
  return value || fallback;
}

/** Plotly cannot read CSS variables: resolve the theme's colours on `el`. */
export function themeOf(el: Element): Theme {
  const style = getComputedStyle(el);
  return {
    font: cssVar(style, "--jp-ui-font-color1", "#333"),
    grid: cssVar(style, "--jp-border-color2", "#ddd"),
    accent: cssVar(style, "--jp-brand-color1", "#1976d2"),
    muted: cssVar(style, "--jp-warn-color1", "#f57c00"),
  };
}

export function baseLayout(theme: Theme, uirevision: string): Partial<Plotly.Layout> {
  return {
    uirevision,
    autosize: true,
    height: 260,
    margin: { l: 50, r: 10, t: 10, b: 60 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: theme.font, size: 11 },
    bargap: 0.05,
    hovermode: "closest",
  };
}

/** The count axis both histograms share: linear or log, keeping zoom per scale. */
export function countAxis(theme: Theme, title: string, logY: boolean): Partial<Plotly.LayoutAxis> {
  return {
    title: { text: title },
    type: logY ? "log" : "linear",
    uirevision: logY ? "log" : "linear",
    gridcolor: theme.grid,
  };
}

/** A short key of the theme, to redraw when it changes. */
export function themeKey(theme: Theme): string {
  return `${theme.font}|${theme.grid}|${theme.accent}|${theme.muted}`;
}

/**
 * Call `onChange` when the host switches theme (JupyterLab sets data-jp-theme-* attributes and
 * class names on <body>). Returns a function that stops watching.
 */
export function watchTheme(onChange: () => void): () => void {
  if (typeof MutationObserver === "undefined" || !document.body) return () => {};
  const observer = new MutationObserver(() => onChange());
  observer.observe(document.body, {
    attributes: true,
    attributeFilter: ["class", "style", "data-jp-theme-light", "data-jp-theme-name"],
  });
  return () => observer.disconnect();
}

const CONFIG: Partial<Plotly.Config> = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d"],
};

/** One plot div: `draw` calls Plotly.react (new arrays each time), `destroy` purges it. */
export class PlotArea {
  readonly div: HTMLDivElement;
  private plotted = false;
  private destroyed = false;
  private observer: ResizeObserver | undefined;

  constructor(testid: string, label: string) {
    this.div = document.createElement("div");
    this.div.className = "featmon-plot";
    this.div.setAttribute("data-testid", testid);
    this.div.setAttribute("role", "img");
    this.div.setAttribute("aria-label", label);
    if (typeof ResizeObserver !== "undefined") {
      this.observer = new ResizeObserver(() => {
        if (this.plotted && !this.destroyed && this.div.isConnected) Plotly.Plots.resize(this.div);
      });
      this.observer.observe(this.div);
    }
  }

  draw(data: Plotly.Data[], layout: Partial<Plotly.Layout>): void {
    if (this.destroyed) return;
    this.plotted = true;
    const done = Plotly.react(this.div, data, layout, CONFIG);
    // A failed draw must not become an unhandled rejection; the next snapshot retries.
    if (done && typeof done.catch === "function") {
      done.catch((err: unknown) => console.warn("featmon: plot failed", err));
    }
  }

  destroy(): void {
    this.destroyed = true;
    this.observer?.disconnect();
    this.observer = undefined;
    if (this.plotted) Plotly.purge(this.div);
    this.plotted = false;
  }
}
