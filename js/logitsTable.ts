/**
 * "Promotes / suppresses": in a selected feature's panel, the vocabulary tokens its decoder
 * direction raises and lowers most (W_dec[f] @ W_U, without the model's final layer norm — the
 * SAEDashboard convention), side by side with their values, and a small inline SVG histogram
 * of that value over the whole vocabulary (zero marked). Where W_U came from is said, so logits
 * read from tied input embeddings (an encoder such as MiniLM) are labelled as such.
 */

import { h } from "./dom";
import { formatFloat, formatInt } from "./format";
import type { LogitRow, LogitsMessage } from "./protocol";

const SVG = "http://www.w3.org/2000/svg";
/** The histogram's size in CSS pixels. */
export const HIST_WIDTH = 200;
export const HIST_HEIGHT = 40;

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

/** Rows that have the shape the kernel sends (others are skipped, not drawn wrong). */
function isRow(row: unknown): row is LogitRow {
  return (
    Array.isArray(row) &&
    row.length >= 3 &&
    Number.isInteger(row[0]) &&
    (row[1] === null || typeof row[1] === "string") &&
    typeof row[2] === "number" &&
    Number.isFinite(row[2])
  );
}

function signed(value: number): string {
  return value > 0 ? `+${formatFloat(value)}` : formatFloat(value);
}

function tokenCell(row: LogitRow): HTMLElement {
  const [id, text] = row;
  return h("td", { class: "featmon-logit-token", title: `token ${id}` }, text === null ? `#${id}` : JSON.stringify(text));
}

function table(top: LogitRow[], bottom: LogitRow[]): HTMLElement {
  const rows: HTMLElement[] = [];
  for (let i = 0; i < Math.max(top.length, bottom.length); i++) {
    const up = top[i];
    const down = bottom[i];
    rows.push(
      h(
        "tr",
        {},
        ...(up ? [tokenCell(up), h("td", { class: "featmon-logit-up" }, signed(up[2]))] : [h("td"), h("td")]),
        ...(down ? [tokenCell(down), h("td", { class: "featmon-logit-down" }, formatFloat(down[2]))] : [h("td"), h("td")]),
      ),
    );
  }
  return h(
    "table",
    { class: "featmon-logits-table" },
    h("thead", {}, h("tr", {}, h("th", { colspan: 2 }, "promotes"), h("th", { colspan: 2 }, "suppresses"))),
    h("tbody", {}, ...rows),
  );
}

/** The histogram of the values over the vocabulary as an inline SVG: one bar a bin (heights
 * on a square-root scale, so the tails stay visible), zero marked where it falls inside. */
export function histogram(counts: readonly number[], lo: number, hi: number): SVGElement {
  const root = svg("svg", {
    width: HIST_WIDTH,
    height: HIST_HEIGHT,
    viewBox: `0 0 ${HIST_WIDTH} ${HIST_HEIGHT}`,
    class: "featmon-logits-hist",
    role: "img",
  });
  const total = counts.reduce((a, b) => a + b, 0);
  const title = svg("title", {});
  title.textContent = `${formatInt(total)} tokens, values ${formatFloat(lo)} to ${formatFloat(hi)}`;
  root.append(title);
  const peak = Math.sqrt(Math.max(1, ...counts));
  const width = HIST_WIDTH / Math.max(1, counts.length);
  const step = (hi - lo) / Math.max(1, counts.length);
  counts.forEach((count, i) => {
    if (!(count > 0)) return;
    const height = Math.max(1, (Math.sqrt(count) / peak) * (HIST_HEIGHT - 2));
    const bar = svg("rect", { x: i * width, y: HIST_HEIGHT - height, width: Math.max(0.5, width - 0.5), height, class: "featmon-logits-bar" });
    const tip = svg("title", {});
    tip.textContent = `${formatInt(count)} tokens in ${formatFloat(lo + i * step)} … ${formatFloat(lo + (i + 1) * step)}`;
    bar.append(tip);
    root.append(bar);
  });
  if (lo < 0 && hi > 0) {
    const x = ((0 - lo) / (hi - lo)) * HIST_WIDTH;
    root.append(svg("line", { x1: x, x2: x, y1: 0, y2: HIST_HEIGHT, class: "featmon-logits-zero" }));
  }
  return root;
}

/** The "promotes / suppresses" part of a panel (nothing when the kernel sends none: no
 * unembedding is known, or an old kernel). */
export function logitsView(message: LogitsMessage | undefined): HTMLElement | "" {
  if (!message || !Array.isArray(message.top) || !Array.isArray(message.bottom)) return "";
  const top = message.top.filter(isRow);
  const bottom = message.bottom.filter(isRow);
  const counts = Array.isArray(message.counts) ? message.counts.filter((c) => Number.isFinite(c)) : [];
  const drawable = counts.length > 0 && Number.isFinite(message.lo) && Number.isFinite(message.hi) && message.hi > message.lo;
  return h(
    "div",
    { class: "featmon-logits", "data-testid": "logits" },
    h("h5", {}, "Promotes / suppresses"),
    h("div", { class: "featmon-chart-note" }, `W_dec · W_U from the model's ${message.source}, no final layer norm`),
    top.length || bottom.length ? table(top, bottom) : "",
    drawable ? histogram(counts, message.lo, message.hi) : "",
  );
}
