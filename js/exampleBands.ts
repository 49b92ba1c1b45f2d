/**
 * A feature panel's examples grouped by activation interval: its top examples and the uniform
 * sample of its activating tokens (marked "sampled") in bands of whole value-histogram bins,
 * highest first, each saying what share of the feature's activations it holds (`bands.ts`).
 */

import { activationBands } from "./bands";
import { h } from "./dom";
import { formatFloat, formatPercent } from "./format";
import type { PanelExample } from "./protocol";

/** One example as a list item (the panel's own row drawing). */
export type ExampleRow = (example: PanelExample) => HTMLElement;

function range(low: number, high: number): string {
  if (low === -Infinity) return `below ${formatFloat(high)}`;
  if (high === Infinity) return `${formatFloat(low)} and above`;
  return `${formatFloat(low)}–${formatFloat(high)}`;
}

/** The bands of `top` and `samples` against the histogram (`edges`, `counts`). */
export function exampleBandsView(
  top: readonly PanelExample[],
  samples: readonly PanelExample[],
  edges: ArrayLike<number>,
  counts: ArrayLike<number>,
  row: ExampleRow,
): HTMLElement {
  const tagged = [
    ...top.map((example) => ({ value: example.value, example, sampled: false })),
    ...samples.map((example) => ({ value: example.value, example, sampled: true })),
  ];
  const bands = activationBands(edges, counts, tagged).filter((b) => b.examples.length > 0);
  return h(
    "div",
    { class: "featmon-bands", "data-testid": "bands" },
    ...bands.map((band) =>
      h(
        "section",
        { class: "featmon-band", "data-bins": `${band.firstBin}-${band.lastBin}` },
        h(
          "div",
          { class: "featmon-chart-note" },
          `interval ${range(band.low, band.high)} holds ` +
            (band.share === null ? "(no activations counted since the reset)" : formatPercent(band.share)),
        ),
        h(
          "ol",
          { class: "featmon-examples" },
          ...band.examples.map(({ example, sampled }) => {
            const item = row(example);
            if (sampled) {
              item.classList.add("featmon-sampled");
              item.append(h("span", { class: "featmon-pos" }, " (sampled)"));
            }
            return item;
          }),
        ),
      ),
    ),
  );
}
