/** Recent activity: the latest history records, newest first, with their top features. */

import type { Component } from "./component";
import { h, setText } from "./dom";
import { DASH, formatClock, formatFloat } from "./format";
import type { ActivationRecordMessage, FeatureValue, Snapshot } from "./protocol";

/** Records listed at most (the kernel sends up to 50). */
export const MAX_SHOWN = 20;

function chips(items: readonly FeatureValue[], cls: string): HTMLElement[] {
  return items.map(([feature, value]) =>
    h(
      "span",
      { class: `featmon-chip ${cls}`, title: `feature ${feature}: ${value === null ? "not finite" : String(value)}` },
      h("b", {}, `#${feature}`),
      ` ${value === null ? DASH : formatFloat(value)}`,
    ),
  );
}

/** Identity and content of a record: a changed feature selection changes `values`. */
function recordKey(r: ActivationRecordMessage): string {
  return `${r.request_id}/${r.row}@${r.position}:${r.timestamp}:${JSON.stringify([r.top, r.values, r.token_id])}`;
}

export class RecentRecords implements Component {
  readonly el: HTMLElement;
  private readonly list = h("ol", { class: "featmon-records", "data-testid": "records" });
  private readonly empty = h("p", { class: "featmon-chart-note", "data-testid": "records-empty" });
  private lastKey = "";
  /** Built rows by record key: a record keeps its row while it stays in view, so a new
   * snapshot builds only the records that are new (rebuilding all 20 dominated apply time). */
  private rows = new Map<string, HTMLElement>();

  constructor() {
    this.el = h(
      "section",
      { class: "featmon-recent", "aria-label": "Recent activity" },
      h("h3", {}, "Recent activity"),
      this.empty,
      this.list,
    );
    this.update(null);
  }

  update(snapshot: Snapshot | null): void {
    const records = snapshot ? snapshot.records.slice(0, MAX_SHOWN) : [];
    setText(this.empty, records.length ? "" : "No tokens recorded yet.");
    this.empty.hidden = records.length > 0;
    const keys = records.map(recordKey);
    const key = keys.join("|");
    if (key === this.lastKey) return;
    this.lastKey = key;
    const rows = new Map<string, HTMLElement>();
    records.forEach((r, i) => {
      const k = rows.has(keys[i]!) ? `${keys[i]}#${i}` : keys[i]!; // identical twins both show
      rows.set(k, this.rows.get(k) ?? recordRow(r));
    });
    this.rows = rows;
    this.list.replaceChildren(...rows.values());
  }

  destroy(): void {
    this.rows.clear();
  }
}

/** A record's token: its text when the kernel knows a tokenizer, else its id, else nothing. */
function tokenLabel(r: ActivationRecordMessage): HTMLElement | null {
  if (typeof r.token === "string") {
    return h("span", { class: "featmon-token", title: `token ${r.token_id ?? ""}` }, r.token);
  }
  if (typeof r.token_id === "number") return h("span", { class: "featmon-token id" }, `#${r.token_id}`);
  return null;
}

/** One record as a list row: its token, where it came from, its top features, configured
 * values. */
function recordRow(r: ActivationRecordMessage): HTMLElement {
  const token = tokenLabel(r);
  const head = h(
    "span",
    { class: "featmon-record-id", title: formatClock(r.timestamp) },
    ...(token ? [token, " "] : []),
    `${r.request_id}/${r.row}`,
    h("span", { class: "featmon-pos" }, ` pos ${r.position}`),
  );
  const top = r.top.length
    ? chips(r.top, "top")
    : [h("span", { class: "featmon-none" }, "no active feature")];
  const parts: (Node | string)[] = [head, h("span", { class: "featmon-chips" }, ...top)];
  if (r.values.length) {
    parts.push(h("span", { class: "featmon-chips values", title: "configured features" }, ...chips(r.values, "value")));
  }
  return h("li", { "data-record": `${r.request_id}/${r.row}/${r.position}` }, ...parts);
}
