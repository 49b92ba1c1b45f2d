// The charts with the real plotly.js (jsdom can run it): bars are drawn, live updates keep the
// user's zoom (uirevision), and purge empties the plot.
import Plotly from "plotly.js-basic-dist-min";
import { afterEach, describe, expect, it } from "vitest";
import type { ViewContext } from "./component";
import { FrequencyChart } from "./frequencyChart";
import { decodeSnapshot } from "./protocol";
import { valueCounts, snapshotMessage } from "./testing";
import { ValuesChart } from "./valuesChart";

const ctx = { signal: new AbortController().signal } as ViewContext;
const hosts: HTMLElement[] = [];

function host(): HTMLElement {
  const el = document.createElement("div");
  document.body.append(el);
  hosts.push(el);
  return el;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
}

type PlotDiv = HTMLElement & { data?: Array<Record<string, unknown>>; layout?: Record<string, any> };

afterEach(() => {
  for (const el of hosts.splice(0)) el.remove();
});

describe("charts with real plotly", () => {
  it("draws the frequency histogram with a never-fired bar and keeps zoom across updates", async () => {
    const chart = new FrequencyChart(ctx);
    host().append(chart.el);
    chart.update(decodeSnapshot(snapshotMessage({ neverFired: 12 })));
    chart.draw(); // update() alone never calls plotly: the view schedules draw()
    await settle();
    const div = chart.plot.div as PlotDiv;
    expect(div.querySelectorAll(".main-svg").length).toBeGreaterThan(0);
    expect(div.querySelectorAll("g.point").length).toBeGreaterThan(0);
    expect(div.data).toHaveLength(2);
    expect(div.data![1]!.y).toEqual([12]);
    expect(div.textContent).toContain("never fired");

    // The user zooms; a live update keeps the zoomed range.
    await Plotly.relayout(div, { "xaxis.range": [-4, -1] });
    chart.update(decodeSnapshot(snapshotMessage({ sequence: 2, neverFired: 13, frequencyCounts: Array(32).fill(3) })));
    chart.draw();
    await settle();
    expect(div.data![1]!.y).toEqual([13]);
    expect(div.layout!.xaxis.range).toEqual([-4, -1]);

    chart.destroy();
    expect(div.querySelectorAll(".main-svg").length).toBe(0);
  });

  it("draws one bar trace per selected feature with an 'inactive' first bin", async () => {
    const chart = new ValuesChart(ctx);
    host().append(chart.el);
    chart.update(
      decodeSnapshot(
        snapshotMessage({ values: { 3: valueCounts((i) => (i === 0 ? 50 : i % 5)), 8: valueCounts(() => 2) } }),
      ),
    );
    chart.draw();
    await settle();
    const div = chart.plot.div as PlotDiv;
    expect(div.data!.map((t) => t.name)).toEqual(["#3", "#8"]);
    expect(div.querySelectorAll("g.trace.bars").length).toBe(2);
    expect(div.textContent).toContain("inactive");
    chart.destroy();
  });
});
