import { describe, expect, it } from "vitest";

import { FeaturePanels } from "./featurePanels";
import { HIST_HEIGHT, HIST_WIDTH, histogram, logitsView } from "./logitsTable";
import { type FeaturePanelMessage, type LogitsMessage, decodeSnapshot } from "./protocol";
import { snapshotMessage } from "./testing";

const LOGITS: LogitsMessage = {
  source: "input embeddings (tied)",
  top: [
    [2054, " agent", 1.25],
    [17, null, 0.5],
  ],
  bottom: [
    [99, " the", -2.5],
    [5, "\n", -0.125],
  ],
  lo: -2.5,
  hi: 1.25,
  counts: [1, 0, 4, 9, 1],
};

const PANEL: FeaturePanelMessage = {
  feature: 12,
  label: null,
  count: 10,
  active_ratio: 0.1,
  mean_active: 1,
  max: 2,
  examples: [],
  logits: LOGITS,
};

function part(el: HTMLElement | ""): HTMLElement {
  expect(el).not.toBe("");
  return el as HTMLElement;
}

describe("logits table", () => {
  it("lists promoted and suppressed tokens side by side with their values", () => {
    const el = part(logitsView(LOGITS));
    const rows = Array.from(el.querySelectorAll("tbody tr")).map((tr) =>
      Array.from(tr.querySelectorAll("td")).map((td) => td.textContent),
    );
    expect(rows).toEqual([
      ['" agent"', "+1.25", '" the"', "-2.5"],
      ["#17", "+0.5", '"\\n"', "-0.125"],
    ]);
    expect(el.querySelector("td")!.getAttribute("title")).toBe("token 2054");
  });

  it("says where W_U came from and that no final layer norm is applied", () => {
    const el = part(logitsView(LOGITS));
    expect(el.querySelector(".featmon-chart-note")!.textContent).toBe(
      "W_dec · W_U from the model's input embeddings (tied), no final layer norm",
    );
  });

  it("draws one bar per non-empty bin, tallest for the largest count, and marks zero", () => {
    const svg = histogram(LOGITS.counts, LOGITS.lo, LOGITS.hi);
    const bars = Array.from(svg.querySelectorAll("rect"));
    expect(bars).toHaveLength(4);
    const heights = bars.map((b) => Number(b.getAttribute("height")));
    expect(Math.max(...heights)).toBeCloseTo(HIST_HEIGHT - 2);
    expect(heights[2]).toBe(Math.max(...heights)); // the bin of 9
    expect(Number(bars[0]!.getAttribute("x"))).toBe(0);
    expect(Number(bars[3]!.getAttribute("x"))).toBeCloseTo((4 * HIST_WIDTH) / 5);
    expect(bars[2]!.querySelector("title")!.textContent).toContain("9 tokens in");
    const zero = svg.querySelector("line")!;
    expect(Number(zero.getAttribute("x1"))).toBeCloseTo((2.5 / 3.75) * HIST_WIDTH);
    expect(svg.querySelector("title")!.textContent).toContain("15 tokens");
  });

  it("draws nothing it cannot: no message, malformed rows, an empty range", () => {
    expect(logitsView(undefined)).toBe("");
    const el = part(logitsView({ ...LOGITS, top: [[1, 2, 3] as never, [4, "x", 1]], bottom: [], lo: 1, hi: 1 }));
    expect(el.querySelectorAll("tbody tr")).toHaveLength(1);
    expect(el.querySelector("svg")).toBeNull();
  });

  it("is part of a selected feature's panel, and absent without logits", () => {
    const view = new FeaturePanels();
    view.update(decodeSnapshot(snapshotMessage({ panels: [PANEL, { ...PANEL, feature: 3, logits: undefined }] })));
    const panels = view.el.querySelectorAll("article");
    expect(panels[0]!.querySelector('[data-testid="logits"]')).not.toBeNull();
    expect(panels[1]!.querySelector('[data-testid="logits"]')).toBeNull();
  });
});
