/**
 * Feature panels: for each selected feature (a clicked table row), its label, a few statistics
 * and its top-activating examples as token text, each token shaded by the feature's activation
 * on it, the activating token marked, values on hover, what it fires with (`firesWith`:
 * clicking one of those selects it) and what it promotes / suppresses (`logitsTable`). Panels follow the kernel's snapshots, so better examples
 * appear as they arrive.
 */

import type { Component, ViewContext } from "./component";
import { h } from "./dom";
import { exampleBandsView } from "./exampleBands";
import { Feedback } from "./feedback";
import { SELECT_ATTRIBUTE, firesWithView, withFeature } from "./firesWith";
import { formatFloat, formatInt, formatPercent } from "./format";
import { logitsView } from "./logitsTable";
import type { FeaturePanelMessage, PanelExample, Snapshot, ValueHistogram } from "./protocol";

/** Background of a token: the accent colour, as strong as its activation against the
 * example's own maximum (0 and unknown: no shading). */
export function tokenShade(activation: number | null, max: number): string {
  if (activation === null || !(max > 0) || !(activation > 0)) return "";
  const alpha = Math.min(1, activation / max);
  return `rgba(255, 127, 14, ${(0.12 + 0.68 * alpha).toFixed(3)})`;
}

/** " · p50 a · p90 b · p99 c" from a panel's quantiles ("" when none were sent or it never
 * fired). */
export function quantileText(quantiles: FeaturePanelMessage["quantiles"]): string {
  if (!quantiles) return "";
  return quantiles
    .map(([q, v]) => ` · p${Math.round(q * 100)} ${formatFloat(v ?? NaN)}`)
    .join("");
}

function tokenText(example: PanelExample, i: number): string {
  const text = example.tokens?.[i];
  if (typeof text === "string") return text;
  const id = example.token_ids?.[i];
  return id === undefined ? "?" : `#${id}`;
}

function exampleRow(example: PanelExample): HTMLElement {
  const known = example.activations.filter((a): a is number => a !== null);
  const max = Math.max(example.value ?? 0, ...known);
  const count = example.tokens?.length ?? example.token_ids?.length ?? 0;
  const tokens: HTMLElement[] = [];
  for (let i = 0; i < count; i++) {
    const activation = example.activations[i] ?? null;
    const span = h(
      "span",
      {
        class: i === example.index ? "featmon-tok active" : "featmon-tok",
        title: activation === null ? "activation not kept" : `activation ${formatFloat(activation)}`,
      },
      tokenText(example, i),
    );
    span.style.background = tokenShade(activation, max);
    tokens.push(span);
  }
  return h(
    "li",
    { "data-record": `${example.request_id}/${example.row}/${example.position}` },
    h("span", { class: "featmon-example-value" }, formatFloat(example.value ?? NaN)),
    h("span", { class: "featmon-example-text" }, ...(tokens.length ? tokens : ["(tokens not known)"])),
    h("span", { class: "featmon-pos" }, ` ${example.request_id}/${example.row} pos ${example.position}`),
  );
}

/** The examples: in activation-interval bands when the feature's value histogram is known
 * (`exampleBands`), else the top ones as a list. */
function examplesView(p: FeaturePanelMessage, histogram: Histogram | null): HTMLElement {
  const samples = p.samples ?? [];
  if (!p.examples.length && !samples.length) {
    return h("p", { class: "featmon-chart-note" }, "No example yet: it has not fired above the threshold.");
  }
  if (histogram) return exampleBandsView(p.examples, samples, histogram.edges, histogram.counts, exampleRow);
  return h("ol", { class: "featmon-examples" }, ...p.examples.map(exampleRow));
}

interface Histogram {
  edges: ArrayLike<number>;
  counts: ArrayLike<number>;
}

function panel(p: FeaturePanelMessage, selected: readonly number[], histogram: Histogram | null): HTMLElement {
  const stats =
    `seen ${formatInt(p.count)} · active ${formatPercent(p.active_ratio ?? NaN)} · ` +
    `mean active ${formatFloat(p.mean_active ?? NaN)} · max ${formatFloat(p.max ?? NaN)}` +
    quantileText(p.quantiles);
  return h(
    "article",
    { class: "featmon-panel", "data-feature": String(p.feature), "data-testid": `panel-${p.feature}` },
    h("h4", {}, `feature ${p.feature}`, p.label ? h("span", { class: "featmon-label" }, p.label) : ""),
    h("div", { class: "featmon-chart-note" }, stats),
    examplesView(p, histogram),
    firesWithView(p.fires_with, selected),
    logitsView(p.logits),
  );
}

export class FeaturePanels implements Component {
  readonly el: HTMLElement;
  private readonly list = h("div", { class: "featmon-panels", "data-testid": "panels" });
  private readonly empty = h("p", { class: "featmon-chart-note" },
    "Click a feature in the table to see what it fires on.");
  private readonly feedback = new Feedback("panels");
  private lastKey = "";
  private selected: readonly number[] = [];

  /** `ctx` sends the `select` command of a "fires with" click (without one: display only). */
  constructor(private readonly ctx?: ViewContext) {
    this.el = h(
      "section",
      { class: "featmon-panels-section", "aria-label": "Selected features" },
      h("h3", {}, "What the selected features fire on", " ", this.feedback.el),
      this.empty,
      this.list,
    );
    // One listener for every "fires with" button, however often the panels are rebuilt.
    this.list.addEventListener(
      "click",
      (event) => {
        const target = event.target instanceof Element ? event.target.closest(`[${SELECT_ATTRIBUTE}]`) : null;
        const feature = Number(target?.getAttribute(SELECT_ATTRIBUTE));
        if (target && Number.isInteger(feature)) this.select(feature);
      },
      ctx ? { signal: ctx.signal } : {},
    );
  }

  update(snapshot: Snapshot | null): void {
    const panels = snapshot?.panels ?? [];
    this.selected = snapshot?.state.selected_features ?? [];
    this.empty.hidden = panels.length > 0;
    // Rebuild only when the panels changed (most snapshots leave the examples as they were).
    const values = new Map<number, ValueHistogram>((snapshot?.values ?? []).map((v) => [v.feature, v]));
    const histogram = (feature: number): Histogram | null => {
      const counts = values.get(feature)?.counts;
      return snapshot && counts ? { edges: snapshot.valueEdges, counts } : null;
    };
    const key = JSON.stringify([panels, this.selected, panels.map((p) => Array.from(histogram(p.feature)?.counts ?? []))]);
    if (key === this.lastKey) return;
    this.lastKey = key;
    this.list.replaceChildren(...panels.map((p) => panel(p, this.selected, histogram(p.feature))));
  }

  /** Select `feature` too (a "fires with" click); already selected: nothing to do. */
  select(feature: number): void {
    if (!this.ctx || this.selected.includes(feature)) return;
    this.feedback.pending();
    this.ctx.commands.send({ type: "select", features: withFeature(this.selected, feature) }, (reply) =>
      this.feedback.reply(reply, `selected feature ${feature}`),
    );
  }

  destroy(): void {
    this.feedback.destroy();
    this.list.replaceChildren();
  }
}
