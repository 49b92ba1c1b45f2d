/** Drift view: the features firing most above (hot) and below (cold) the reference, with their
 * log-ratios and z, and the divergence over all features; hidden without a reference. */

import type { Component } from "./component";
import { h, setText } from "./dom";
import { DASH, formatFloat } from "./format";
import type { DriftRow, Snapshot } from "./protocol";

function describe(row: DriftRow): string {
  const [feature, logRatio, z] = row;
  const sign = logRatio >= 0 ? "+" : "";
  return `#${feature} ${sign}${formatFloat(logRatio)} (z ${formatFloat(z)})`;
}

export class DriftView implements Component {
  readonly el: HTMLElement;
  private readonly summary = h("span", { "data-testid": "drift-summary" });
  private readonly hot = h("ol", { class: "featmon-drift-list", "data-testid": "drift-hot" });
  private readonly cold = h("ol", { class: "featmon-drift-list", "data-testid": "drift-cold" });

  constructor() {
    this.el = h(
      "section",
      { class: "featmon-drift", "data-testid": "drift", "aria-label": "Drift against the reference" },
      h("h3", {}, "Drift against the reference"),
      this.summary,
      h("div", { class: "featmon-drift-columns" },
        h("div", {}, h("h4", {}, "hot (fires more)"), this.hot),
        h("div", {}, h("h4", {}, "cold (fires less)"), this.cold)),
    );
    this.update(null);
  }

  private fill(list: HTMLElement, rows: DriftRow[]): void {
    list.replaceChildren(...rows.map((row) => h("li", {}, describe(row))));
  }

  update(snapshot: Snapshot | null): void {
    const drift = snapshot?.oversight.drift ?? null;
    this.el.hidden = drift === null;
    if (drift === null) return;
    const divergence = drift.divergence === null ? DASH : formatFloat(drift.divergence);
    setText(this.summary, `${drift.reference} · Jensen–Shannon divergence ${divergence} bits · ${drift.test}; log10 ratio of firing frequency`);
    this.fill(this.hot, drift.hot);
    this.fill(this.cold, drift.cold);
  }

  destroy(): void {}
}
