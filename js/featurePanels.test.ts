import { describe, expect, it } from "vitest";

import { FeaturePanels, tokenShade } from "./featurePanels";
import { type FeaturePanelMessage, decodeSnapshot } from "./protocol";
import { VALUE_EDGES, snapshotMessage } from "./testing";

const PANEL: FeaturePanelMessage = {
  feature: 12,
  label: "passive 'by'",
  count: 400,
  active_ratio: 0.05,
  mean_active: 1.5,
  max: 11.09,
  examples: [
    {
      value: 11.09,
      request_id: "demo",
      row: 3,
      position: 7,
      index: 2,
      tokens: [" called", " ", "by", " the", " garbage"],
      activations: [0.5, null, 11.09, 0, 2],
    },
    { value: 9, request_id: "demo", row: 0, position: 4, index: -1, token_ids: [5, 6], activations: [1, 9] },
  ],
};

function show(view: FeaturePanels, panels: FeaturePanelMessage[]): void {
  view.update(decodeSnapshot(snapshotMessage({ panels })));
}

describe("feature panels", () => {
  it("shows label, statistics and each example as shaded token text", () => {
    const view = new FeaturePanels();
    show(view, [PANEL]);
    const panel = view.el.querySelector<HTMLElement>('[data-testid="panel-12"]')!;
    expect(panel.querySelector("h4")!.textContent).toBe("feature 12passive 'by'");
    expect(panel.textContent).toContain("seen 400");
    const [first, second] = Array.from(panel.querySelectorAll("li"));
    const tokens = Array.from(first!.querySelectorAll<HTMLElement>(".featmon-tok"));
    expect(tokens.map((t) => t.textContent)).toEqual([" called", " ", "by", " the", " garbage"]);
    expect(tokens[2]!.classList.contains("active")).toBe(true);
    expect(tokens[2]!.title).toBe("activation 11.09");
    expect(tokens[1]!.title).toBe("activation not kept");
    // The activating token is the strongest shade; zero and unknown are not shaded.
    expect(tokens[2]!.style.background).toContain("0.8");
    expect(tokens[1]!.style.background).toBe("");
    expect(tokens[3]!.style.background).toBe("");
    expect(first!.dataset.record).toBe("demo/3/7");
    // Without a tokenizer the ids are shown.
    expect(Array.from(second!.querySelectorAll(".featmon-tok")).map((t) => t.textContent)).toEqual(["#5", "#6"]);
  });

  it("explains an empty selection and a feature without examples, and rebuilds only on change", () => {
    const view = new FeaturePanels();
    show(view, []);
    expect(view.el.textContent).toContain("Click a feature in the table");
    show(view, [{ ...PANEL, examples: [] }]);
    expect(view.el.textContent).toContain("No example yet");
    const before = view.el.querySelector("article");
    show(view, [{ ...PANEL, examples: [] }]);
    expect(view.el.querySelector("article")).toBe(before);
  });

  it("shades by activation against the example's maximum", () => {
    expect(tokenShade(null, 2)).toBe("");
    expect(tokenShade(0, 2)).toBe("");
    expect(tokenShade(1, 2)).toBe("rgba(255, 127, 14, 0.460)");
    expect(tokenShade(4, 2)).toBe("rgba(255, 127, 14, 0.800)");
  });
});

describe("FeaturePanels' activation bands", () => {
  it("groups the top examples and the marked samples by interval, each band with its share", () => {
    const bins = VALUE_EDGES.length; // bin 0 inactive, then one per pair of edges
    const counts = new Array<number>(bins).fill(0);
    const binOf = (v: number) => VALUE_EDGES.findIndex((e) => e > v); // as the kernel bins
    counts[binOf(11.09)] = 1;
    counts[binOf(0.3)] = 3;
    const sample = { value: 0.3, request_id: "demo", row: 1, position: 2, index: 0, token_ids: [4], activations: [0.3], sampled: true };
    const view = new FeaturePanels();
    view.update(decodeSnapshot(snapshotMessage({ panels: [{ ...PANEL, samples: [sample] }], values: { 12: counts } })));
    const bands = [...view.el.querySelectorAll(".featmon-band")];
    expect(bands.length).toBe(2); // 11.09 and 9 share the top band, 0.3 lies far below
    const notes = bands.map((b) => b.querySelector(".featmon-chart-note")?.textContent ?? "");
    expect(notes[notes.length - 1]).toMatch(/holds 75/);
    expect(notes[0]).toMatch(/holds 25/);
    const sampled = view.el.querySelectorAll(".featmon-sampled");
    expect(sampled.length).toBe(1);
    expect(sampled[0]?.textContent).toMatch(/sampled/);
  });
});
