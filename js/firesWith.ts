/**
 * "Fires with": in a selected feature's panel, the features it fires together with most since
 * it was selected, ranked by Jaccard (tokens where both fired / tokens where either did, so
 * the densest features do not top the list by firing everywhere), each with its label and
 * counts. Each row is a button: clicking it asks the kernel to select that feature too (the
 * `select` command, newest replacing the oldest past the limit).
 */

import { h } from "./dom";
import { formatInt, formatPercent } from "./format";
import { type CoFiringRow, type FiresWithMessage, MAX_SELECTED } from "./protocol";

/** The attribute a row's button carries: the feature it selects. */
export const SELECT_ATTRIBUTE = "data-cofire";

/** `current` with `feature` added (already there: unchanged), the oldest dropped past `max`. */
export function withFeature(current: readonly number[], feature: number, max = MAX_SELECTED): number[] {
  if (current.includes(feature)) return [...current];
  const next = [...current, feature];
  while (next.length > max) next.shift();
  return next;
}

/** Rows that have the shape the kernel sends (others are skipped, not drawn wrong). */
function isRow(row: unknown): row is CoFiringRow {
  return (
    Array.isArray(row) &&
    row.length >= 4 &&
    row.slice(0, 4).every((v) => typeof v === "number" && Number.isFinite(v)) &&
    (row[4] === undefined || row[4] === null || typeof row[4] === "string")
  );
}

function rowItem(row: CoFiringRow, selected: ReadonlySet<number>): HTMLElement {
  const [feature, jaccard, both, active, label] = row;
  const isSelected = selected.has(feature);
  const button = h(
    "button",
    {
      type: "button",
      class: isSelected ? "featmon-cofire selected" : "featmon-cofire",
      [SELECT_ATTRIBUTE]: String(feature),
      title: isSelected
        ? `feature ${feature} is selected`
        : `select feature ${feature}: fired on ${formatInt(both)} of the same tokens (it fired on ${formatInt(active)})`,
    },
    `#${feature}`,
  );
  return h(
    "li",
    { "data-feature": String(feature) },
    button,
    label ? h("span", { class: "featmon-label" }, label) : "",
    h("span", { class: "featmon-cofire-stats" }, ` J ${jaccard.toFixed(3)} · both ${formatInt(both)} / ${formatInt(active)}`),
  );
}

/** The "fires with" part of a panel (nothing for an old kernel that sends none). */
export function firesWithView(message: FiresWithMessage | undefined, selected: readonly number[]): HTMLElement | "" {
  if (!message || !Array.isArray(message.features)) return "";
  const rows = message.features.filter(isRow);
  const share = message.tokens > 0 ? ` (${formatPercent(message.active / message.tokens)})` : "";
  const note =
    `over ${formatInt(message.tokens)} tokens since selected, where it fired on ${formatInt(message.active)}${share}; ` +
    "ranked by Jaccard: both / either";
  const chosen = new Set(selected);
  return h(
    "div",
    { class: "featmon-fires-with", "data-testid": "fires-with" },
    h("h5", {}, "Fires with"),
    h("div", { class: "featmon-chart-note" }, note),
    rows.length
      ? h("ol", { class: "featmon-cofire-list" }, ...rows.map((row) => rowItem(row, chosen)))
      : h("p", { class: "featmon-chart-note" }, "Nothing has fired with it yet."),
  );
}
