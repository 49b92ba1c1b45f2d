// The values chart's geometry: where a value sits on the bin axis, the quantile marks (one
// dotted line and label per quantile, in the feature's colour), the inactive share, and the
// panel's quantile text.
import { describe, expect, it } from "vitest";
import { quantileText } from "./featurePanels";
import { PALETTE, themeOf } from "./plot";
import { VALUE_EDGES, valueCounts } from "./testing";
import { inactiveShare, quantileMarks, valueX, valuesFigure } from "./valuesChart";

const edges = new Float32Array(VALUE_EDGES);

describe("values chart", () => {
  it("places a value linearly within its log bin, clamping the open ends", () => {
    expect(edges.length).toBe(32);
    // 1.0 is edge 17 (= 2^0): the boundary between log bins 17 and 18.
    expect(valueX(1.0, edges)).toBeCloseTo(17.5);
    expect(valueX(1.25, edges)).toBeCloseTo(18); // halfway through 1 .. 1.5
    expect(valueX(1e-6, edges)).toBeCloseTo(0.5); // below every edge: the first bin's start
    expect(valueX(1e6, edges)).toBeCloseTo(31.5); // beyond the last edge
    expect(valueX(null, edges)).toBeNaN();
  });

  it("marks p50 / p90 / p99 of each feature and says its inactive share", () => {
    const counts = valueCounts((i) => (i === 0 ? 30 : i === 18 ? 10 : 0));
    const v = { feature: 3, counts: new Float64Array(counts) };
    const colors = new Map([[3, PALETTE[2]!]]);
    const q = new Map([[3, [[0.5, 1.2], [0.9, 1.4], [0.99, null]] as const]]);
    const marks = quantileMarks([v], q, edges, colors);
    expect(marks.shapes).toHaveLength(2); // a null quantile is not drawn
    expect(marks.annotations.map((a) => a.text)).toEqual(["p50", "p90"]);
    expect(marks.shapes[0]!.line!.color).toBe(PALETTE[2]);
    expect(inactiveShare(v)).toBeCloseTo(0.75);
    const fig = valuesFigure([v], edges, colors, true, themeOf(document.body), q);
    expect((fig.data[0] as { hovertemplate: string }).hovertemplate).toContain("75");
    expect(fig.layout.shapes).toHaveLength(2);
  });

  it("writes a panel's quantiles, or nothing when it never fired", () => {
    expect(quantileText([[0.5, 0.25], [0.9, 2], [0.99, 3.5]])).toContain("p99");
    expect(quantileText(null)).toBe("");
    expect(quantileText(undefined)).toBe("");
  });
});
