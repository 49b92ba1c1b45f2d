import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

const plotly = vi.hoisted(() => ({
  react: vi.fn((..._args: unknown[]) => Promise.resolve()),
  purge: vi.fn(),
  Plots: { resize: vi.fn() },
}));
vi.mock("plotly.js-basic-dist-min", () => ({ default: plotly }));

import { REPLY_TIMEOUT_MS } from "./commands";
import { SUCCESS_MS } from "./feedback";
import { CHART_INTERVAL_MS } from "./schedule";
import { SEARCH_DELAY_MS } from "./table";
import { NEVER_FIRED_LABEL } from "./frequencyChart";
import { INACTIVE_X } from "./valuesChart";
import type { FeaturePanelMessage } from "./protocol";
import { FakeModel, valueCounts, renderProps, snapshotMessage } from "./testing";
import { render } from "./widget";

type El = HTMLElement;

function byTestId<T extends El = El>(root: ParentNode, id: string): T {
  const el = root.querySelector<T>(`[data-testid="${id}"]`);
  if (!el) throw new Error(`no element with data-testid=${id}`);
  return el;
}

interface PlotCall {
  div: HTMLElement;
  data: Array<Record<string, unknown>>;
  layout: Record<string, unknown>;
}

function plotCalls(testid: string): PlotCall[] {
  return plotly.react.mock.calls
    .map(([div, data, layout]) => ({ div, data, layout }) as PlotCall)
    .filter((c) => c.div.getAttribute("data-testid") === testid);
}

function lastPlot(testid: string): PlotCall {
  const calls = plotCalls(testid);
  const last = calls[calls.length - 1];
  if (!last) throw new Error(`no plot drawn in ${testid}`);
  return last;
}

let model: FakeModel;
let el: HTMLElement;
let cleanups: Array<() => void>;

function mount(m: FakeModel = model, host: HTMLElement = el): { cleanup: () => void; root: El } {
  const cleanup = render(renderProps(m, host));
  cleanups.push(cleanup);
  vi.advanceTimersToNextFrame(); // the first apply
  vi.advanceTimersToNextFrame(); // the first chart redraw, on its own frame
  return { cleanup, root: byTestId(host, "featmon-root") };
}

function input(root: ParentNode, id: string, value: string): void {
  const field = byTestId<HTMLInputElement>(root, id);
  field.value = value;
  field.dispatchEvent(new Event("input", { bubbles: true }));
}

beforeEach(() => {
  vi.useFakeTimers({ now: 1_700_000_100_000 });
  plotly.react.mockClear();
  plotly.purge.mockClear();
  window.__featmonStats = undefined;
  model = new FakeModel({ snapshot: snapshotMessage() });
  el = document.createElement("div");
  document.body.append(el);
  cleanups = [];
});

afterEach(() => {
  for (const c of cleanups) c();
  el.remove();
  vi.useRealTimers();
});

describe("rendering a snapshot", () => {
  it("shows status, table rows, records and both charts", () => {
    model = new FakeModel({
      snapshot: snapshotMessage({
        state: { total_tokens: 123456, forward_passes: 78, errors: 2, last_error: "RuntimeError: boom" },
        features: [42, 7],
        columns: { mean: [1.5, NaN] },
        records: [
          { request_id: "req-1", row: 2, position: 5, timestamp: 1_700_000_000, top: [[42, 3.25], [7, null]], values: [] },
        ],
        values: { 42: valueCounts((i) => (i === 0 ? 10 : 1)) },
      }),
    });
    const { root } = mount();
    expect(byTestId(root, "status-tokens").textContent).toBe("123,456");
    expect(byTestId(root, "status-forwards").textContent).toBe("78");
    expect(byTestId(root, "status-enabled").textContent).toContain("live");
    expect(byTestId(root, "status-errors").textContent).toBe("errors: 2 — RuntimeError: boom");
    expect(byTestId(root, "status-errors").classList.contains("has-errors")).toBe(true);
    expect(byTestId(root, "status-dropped").hidden).toBe(true);

    const rows = byTestId(root, "table-top").querySelectorAll("tbody tr");
    expect(Array.from(rows, (r) => r.getAttribute("data-feature"))).toEqual(["42", "7"]);
    const meanCells = Array.from(rows, (r) => r.querySelectorAll("td")[1]!);
    expect(meanCells[0]!.textContent).toBe("1.5");
    meanCells[0]!.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(meanCells[0]!.title).toBe("1.5");
    expect(meanCells[1]!.textContent).toBe("—");
    meanCells[1]!.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(meanCells[1]!.title).toBe("undefined (no data)");
    expect(rows[0]!.classList.contains("selected")).toBe(true);
    expect(rows[1]!.classList.contains("selected")).toBe(false);
    expect(byTestId(root, "table-top").querySelector('th[data-metric="mean"]')!.classList.contains("active")).toBe(true);

    const rec = byTestId(root, "records").querySelectorAll("li");
    expect(rec).toHaveLength(1);
    expect(rec[0]!.textContent).toContain("req-1/2");
    expect(rec[0]!.textContent).toContain("pos 5");
    expect(rec[0]!.textContent).toContain("#42 3.25");
    expect(rec[0]!.textContent).toContain("#7 —");

    const freq = lastPlot("chart-frequency");
    expect(freq.data).toHaveLength(2);
    expect(freq.data[0]!.y).toEqual(Array.from({ length: 32 }, (_, i) => i));
    expect(freq.data[1]).toMatchObject({ name: NEVER_FIRED_LABEL, y: [7] });
    expect((freq.layout.xaxis as { ticktext: string[] }).ticktext[0]).toBe(NEVER_FIRED_LABEL);
    expect(freq.layout.uirevision).toBe("frequency");
    expect(byTestId(root, "freq-summary").textContent).toContain("2 never seen");

    const values = lastPlot("chart-values");
    expect(values.data).toHaveLength(1);
    expect(values.data[0]).toMatchObject({ type: "bar", name: "#42" });
    expect((values.data[0]!.y as number[]).slice(0, 3)).toEqual([10, 1, 1]);
    const xaxis = values.layout.xaxis as { tickvals: number[]; ticktext: string[] };
    expect(xaxis.tickvals[0]).toBe(INACTIVE_X);
    expect((values.data[0]!.x as number[]).slice(0, 3)).toEqual([INACTIVE_X, 1, 2]);
    expect(xaxis.ticktext[0]).toBe("inactive");
    expect(xaxis.ticktext).toContain("1");
    expect(xaxis.ticktext).toContain("64");
    expect(values.layout.uirevision).toBe("values");
  });

  it("shows each feature's label next to its index, full text on hover", () => {
    model = new FakeModel({ snapshot: snapshotMessage({ labels: ["passive 'by'", null, "paths"] }) });
    const { root } = mount();
    const labels = Array.from(byTestId(root, "table-top").querySelectorAll("tbody .featmon-label"));
    expect(labels.map((l) => l.textContent)).toEqual(["passive 'by'", "", "paths"]);
    expect(labels[0]!.getAttribute("title")).toBe("passive 'by'");
    expect(labels[1]!.hasAttribute("title")).toBe(false);
  });

  it("shows top tokens, styled apart from labels, only where a row has no label", () => {
    model = new FakeModel({
      snapshot: snapshotMessage({
        labels: ["passive 'by'", null, null],
        topTokens: [[["by", 4]], [[" the", 3], ["a", 1]], null],
      }),
    });
    const { root } = mount();
    const table = byTestId(root, "table-top");
    const tops = Array.from(table.querySelectorAll("tbody .featmon-top-tokens"));
    expect(tops.map((t) => t.textContent)).toEqual(["", "' the'×3 'a'×1", ""]);
    expect(tops[1]!.getAttribute("title")).toContain("not a label");
    expect(tops[1]!.classList.contains("featmon-label")).toBe(false);
    expect(table.querySelectorAll("tbody .featmon-label")[1]!.textContent).toBe("");
    // The test box sits in the panel area.
    expect(byTestId(root, "probe-box").closest(".featmon-panels-section")).not.toBeNull();
  });

  it("warns when sparse indices outside the SAE were ignored", () => {
    model = new FakeModel({ snapshot: snapshotMessage({ state: { dropped_indices: 1234, d_sae: 64 } }) });
    const { root } = mount();
    const dropped = byTestId(root, "status-dropped");
    expect(dropped.hidden).toBe(false);
    expect(dropped.textContent).toBe("ignored indices: 1,234");
    expect(dropped.title).toBe("sparse feature indices outside 0..63 were ignored");
  });

  it("shows a waiting state before the first snapshot", () => {
    model = new FakeModel({ snapshot: {} });
    const { root } = mount();
    expect(byTestId(root, "status-enabled").textContent).toBe("waiting");
    expect(byTestId(root, "status-tokens").textContent).toBe("—");
    expect(byTestId<HTMLButtonElement>(root, "btn-toggle").disabled).toBe(true);
    expect(byTestId(root, "table-top").querySelectorAll("tbody tr")).toHaveLength(0);
    model.set("snapshot", snapshotMessage({ state: { total_tokens: 5 } }));
    vi.advanceTimersToNextFrame();
    expect(byTestId(root, "status-tokens").textContent).toBe("5");
  });

  it("keeps the last good snapshot and explains a snapshot it cannot read", () => {
    const { root } = mount();
    model.set("snapshot", { ...snapshotMessage({ state: { total_tokens: 9 } }), version: 99 });
    vi.advanceTimersToNextFrame();
    expect(byTestId(root, "snapshot-error").hidden).toBe(false);
    expect(byTestId(root, "snapshot-error").textContent).toContain("version 99");
    expect(byTestId(root, "status-tokens").textContent).toBe("1,000");
    model.set("snapshot", snapshotMessage({ state: { total_tokens: 9 } }));
    vi.advanceTimersToNextFrame();
    expect(byTestId(root, "snapshot-error").hidden).toBe(true);
    expect(byTestId(root, "status-tokens").textContent).toBe("9");
  });

  it("gives new array objects to Plotly.react on every data change", () => {
    mount();
    model.set("snapshot", snapshotMessage({ sequence: 2, frequencyCounts: Array(32).fill(1) }));
    vi.advanceTimersByTime(CHART_INTERVAL_MS + 20);
    const calls = plotCalls("chart-frequency");
    expect(calls).toHaveLength(2);
    expect(calls[1]!.data).not.toBe(calls[0]!.data);
    expect(calls[1]!.data[0]!.y).not.toBe(calls[0]!.data[0]!.y);
    expect(calls[1]!.data[0]!.y).toEqual(Array(32).fill(1));
  });
});

describe("theme", () => {
  it("redraws the charts with the new colours when the host switches theme, until cleanup", async () => {
    const { cleanup } = mount();
    const before = plotCalls("chart-frequency").length;
    document.body.style.setProperty("--jp-ui-font-color1", "rgb(238, 238, 238)");
    await Promise.resolve(); // MutationObserver callbacks run as microtasks
    await Promise.resolve();
    vi.advanceTimersByTime(CHART_INTERVAL_MS + 20); // the redraw is scheduled, rate-limited
    const calls = plotCalls("chart-frequency");
    expect(calls.length).toBe(before + 1);
    expect((calls[calls.length - 1]!.layout.font as { color: string }).color).toBe("rgb(238, 238, 238)");
    expect(plotCalls("chart-values").length).toBeGreaterThan(0);
    cleanup();
    const after = plotly.react.mock.calls.length;
    document.body.style.setProperty("--jp-ui-font-color1", "rgb(1, 2, 3)");
    await Promise.resolve();
    await Promise.resolve();
    vi.advanceTimersByTime(CHART_INTERVAL_MS + 20);
    expect(plotly.react.mock.calls.length).toBe(after);
    document.body.style.removeProperty("--jp-ui-font-color1");
  });
});

describe("live updates", () => {
  it("coalesces several snapshot changes within a frame into one apply of the latest", () => {
    const { root } = mount();
    expect(window.__featmonStats!.applied).toBe(1);
    model.set("snapshot", snapshotMessage({ sequence: 2, state: { total_tokens: 2000 } }));
    model.set("snapshot", snapshotMessage({ sequence: 3, state: { total_tokens: 3000 } }));
    model.set("snapshot", snapshotMessage({ sequence: 4, state: { total_tokens: 4000 } }));
    expect(window.__featmonStats!.applied).toBe(1);
    expect(byTestId(root, "status-tokens").textContent).toBe("1,000");
    vi.advanceTimersToNextFrame();
    expect(window.__featmonStats!.applied).toBe(2);
    expect(window.__featmonStats!.lastApplyMs).toBeGreaterThanOrEqual(0);
    expect(byTestId(root, "status-tokens").textContent).toBe("4,000");
    expect(plotCalls("chart-frequency").length).toBeLessThanOrEqual(2);
  });

  it("computes tokens/s from successive snapshots and ticks the age every second", () => {
    const { root } = mount();
    expect(byTestId(root, "status-rate").textContent).toBe("—");
    expect(byTestId(root, "status-age").textContent).toBe("0 s ago");
    vi.advanceTimersByTime(1000);
    model.set("snapshot", snapshotMessage({ sequence: 2, timestamp: 1_700_000_102, state: { total_tokens: 3000 } }));
    vi.advanceTimersToNextFrame();
    expect(byTestId(root, "status-rate").textContent).toBe("1,000");
    expect(byTestId(root, "status-age").textContent).toBe("0 s ago");
    // The age ticks once a second (ticks are not aligned with the snapshot's arrival).
    vi.advanceTimersByTime(4000);
    expect(byTestId(root, "status-age").textContent).toBe("3 s ago");
    vi.advanceTimersByTime(3000);
    expect(byTestId(root, "status-rate").textContent).toBe("0");
  });

  it("keeps several views of one model live and independent", () => {
    const el2 = document.createElement("div");
    document.body.append(el2);
    const a = mount();
    const b = mount(model, el2);
    model.set("snapshot", snapshotMessage({ sequence: 2, state: { total_tokens: 77 } }));
    vi.advanceTimersToNextFrame();
    expect(byTestId(a.root, "status-tokens").textContent).toBe("77");
    expect(byTestId(b.root, "status-tokens").textContent).toBe("77");
    a.cleanup();
    model.set("snapshot", snapshotMessage({ sequence: 3, state: { total_tokens: 88 } }));
    vi.advanceTimersToNextFrame();
    expect(byTestId(b.root, "status-tokens").textContent).toBe("88");
    expect(el.children).toHaveLength(0);
    el2.remove();
  });
});

describe("chart redraws", () => {
  const freqSnapshot = (sequence: number) =>
    snapshotMessage({ sequence, frequencyCounts: Array(32).fill(sequence) });

  it("applies a snapshot without calling plotly; the charts redraw on a later frame", () => {
    mount();
    const before = plotly.react.mock.calls.length;
    const applied = window.__featmonStats!.applied;
    vi.advanceTimersByTime(CHART_INTERVAL_MS); // past the rate limit: the next redraw is not delayed
    model.set("snapshot", freqSnapshot(2));
    vi.advanceTimersToNextFrame();
    expect(window.__featmonStats!.applied).toBe(applied + 1);
    expect(plotly.react.mock.calls.length).toBe(before); // the apply only scheduled the charts
    vi.advanceTimersToNextFrame();
    expect(plotly.react.mock.calls.length).toBe(before + 1);
    expect(lastPlot("chart-frequency").data[0]!.y).toEqual(Array(32).fill(2));
    expect(window.__featmonStats!.lastChartMs).toBeGreaterThanOrEqual(0);
    expect(window.__featmonStats!.chartDraws).toBeGreaterThan(0);
  });

  it("redraws at a bounded rate and always draws the latest data last", () => {
    mount();
    const start = plotCalls("chart-frequency").length;
    // A snapshot every frame for 1 s: every one is applied, the charts redraw ~every 250 ms.
    for (let seq = 2; seq < 2 + 60; seq++) {
      model.set("snapshot", freqSnapshot(seq));
      vi.advanceTimersByTime(1000 / 60);
    }
    const during = plotCalls("chart-frequency").length - start;
    expect(during).toBeGreaterThanOrEqual(2);
    expect(during).toBeLessThanOrEqual(Math.ceil(1000 / CHART_INTERVAL_MS) + 1);
    // The trailing redraw shows the final snapshot.
    vi.advanceTimersByTime(CHART_INTERVAL_MS + 50);
    expect(lastPlot("chart-frequency").data[0]!.y).toEqual(Array(32).fill(61));
    const settled = plotly.react.mock.calls.length;
    vi.advanceTimersByTime(5 * CHART_INTERVAL_MS);
    expect(plotly.react.mock.calls.length).toBe(settled); // nothing more to draw
  });

  it("cleanup cancels a pending chart redraw", () => {
    const { cleanup } = mount();
    model.set("snapshot", freqSnapshot(2));
    vi.advanceTimersToNextFrame(); // applied; the chart redraw waits for the rate limit
    expect(vi.getTimerCount()).toBeGreaterThan(0);
    const calls = plotly.react.mock.calls.length;
    cleanup();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(5 * CHART_INTERVAL_MS);
    expect(plotly.react.mock.calls.length).toBe(calls);
  });
});

describe("table commands", () => {
  it("asks the kernel to rank by a clicked header, without re-sorting locally", () => {
    const { root } = mount();
    const table = byTestId(root, "table-top");
    const before = Array.from(table.querySelectorAll("tbody tr"), (r) => r.getAttribute("data-feature"));
    table.querySelector<HTMLElement>('th[data-metric="max"] button')!.click();
    expect(model.sent).toHaveLength(1);
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "rank", metric: "max" });
    expect(Array.from(table.querySelectorAll("tbody tr"), (r) => r.getAttribute("data-feature"))).toEqual(before);
    // The kernel's next snapshot carries the new ranking and metric.
    model.reply(model.lastSent().id, true, "ranked by max");
    model.set("snapshot", snapshotMessage({ sequence: 2, metric: "max", features: [2, 3, 1] }));
    vi.advanceTimersToNextFrame();
    expect(table.querySelector('th[data-metric="max"]')!.classList.contains("active")).toBe(true);
    expect(table.querySelector('th[data-metric="max"]')!.getAttribute("aria-sort")).toBe("descending");
    expect(table.querySelector('th[data-metric="mean"]')!.classList.contains("active")).toBe(false);
    expect(byTestId(root, "table-message").textContent).toBe("ranked by max");
  });

  it("ranks by any metric from the rank-by menu (min included)", () => {
    const { root } = mount();
    const select = byTestId<HTMLSelectElement>(root, "select-metric");
    select.value = "min";
    select.dispatchEvent(new Event("change"));
    expect(model.lastSent()).toMatchObject({ type: "rank", metric: "min" });
  });

  it("toggles a clicked row's feature in the selection, at most 8, newest replacing oldest", () => {
    const features = [10, 11, 12, 13, 14, 15, 16, 17, 18];
    const selected = [10, 11, 12, 13, 14, 15, 16, 17];
    model = new FakeModel({
      snapshot: snapshotMessage({ features, state: { selected_features: selected } }),
    });
    const { root } = mount();
    const row = (f: number) => byTestId(root, "table-top").querySelector<HTMLElement>(`tr[data-feature="${f}"]`)!;
    row(18).querySelector<HTMLElement>("td:nth-child(3)")!.click();
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "select", features: [11, 12, 13, 14, 15, 16, 17, 18] });
    model.reply(model.lastSent().id, true, "selected");
    model.set("snapshot", snapshotMessage({ sequence: 2, features, state: { selected_features: [11, 12, 13, 14, 15, 16, 17, 18] } }));
    vi.advanceTimersToNextFrame();
    expect(row(18).classList.contains("selected")).toBe(true);
    expect(row(10).classList.contains("selected")).toBe(false);
    // Clicking a selected row (its keyboard-reachable button) removes it.
    row(12).querySelector("button")!.click();
    expect(model.lastSent()).toMatchObject({ type: "select", features: [11, 13, 14, 15, 16, 17, 18] });
  });

  it("selects a feature clicked in a panel's fires-with list", () => {
    const panel: FeaturePanelMessage = {
      feature: 4, label: null, count: 10, active_ratio: 0.5, mean_active: 1, max: 2, examples: [],
      fires_with: { tokens: 10, active: 5, features: [[9, 0.8, 4, 4, "nine"]] },
    };
    model = new FakeModel({
      snapshot: snapshotMessage({ panels: [panel], state: { selected_features: [4] } }),
    });
    const { root } = mount();
    byTestId(root, "fires-with").querySelector<HTMLElement>('[data-cofire="9"]')!.click();
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "select", features: [4, 9] });
  });

  it("builds on a pending selection for quick successive clicks, and drops it on error", () => {
    const { root } = mount();
    const row = (f: number) => byTestId(root, "table-top").querySelector<HTMLElement>(`tr[data-feature="${f}"]`)!;
    row(3).click();
    row(1).click();
    expect(model.sent.map((m) => m.features)).toEqual([[3], [3, 1]]);
    model.reply(model.sent[0]!.id as number, true, "ok");
    model.reply(model.sent[1]!.id as number, false, "", "ValueError: nope");
    expect(byTestId(root, "table-error").textContent).toBe("ValueError: nope");
    row(2).click();
    expect(model.lastSent()).toMatchObject({ type: "select", features: [2] });
  });

  it("searches in the kernel after a pause in typing and says how many matched", () => {
    const { root } = mount();
    input(root, "table-search", "pa");
    input(root, "table-search", "path");
    vi.advanceTimersByTime(SEARCH_DELAY_MS - 1);
    expect(model.sent.filter((m) => m.type === "search")).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "search", text: "path" });
    model.reply(model.lastSent().id as number, true, "searching for 'path'");
    model.set("snapshot", snapshotMessage({ sequence: 2, features: [12, 40], table_search: "path" }));
    vi.advanceTimersToNextFrame();
    expect(byTestId(root, "table-top").querySelector("caption")!.textContent).toContain(
      "2 features matching 'path'",
    );
  });

  it("sends table_rows from the rows control and restores it on error", () => {
    const { root } = mount();
    const rows = byTestId<HTMLSelectElement>(root, "select-rows");
    rows.value = "100";
    rows.dispatchEvent(new Event("change"));
    expect(model.lastSent()).toMatchObject({ type: "table_rows", rows: 100 });
    model.reply(model.lastSent().id, false, "", "rows must be in 1..200");
    expect(byTestId(root, "table-error").textContent).toBe("rows must be in 1..200");
    expect(rows.value).toBe("50");
  });
});

describe("configure form", () => {
  it("fills the fields from the kernel state", () => {
    model = new FakeModel({
      snapshot: snapshotMessage({ state: { monitored_features: [1, 2, 3, 9], history_size: 500, threshold: 0.5 } }),
    });
    const { root } = mount();
    expect(byTestId<HTMLInputElement>(root, "input-features").value).toBe("1-3,9");
    expect(byTestId<HTMLInputElement>(root, "input-history-size").value).toBe("500");
    expect(byTestId<HTMLInputElement>(root, "input-top-k").value).toBe("10");
    expect(byTestId<HTMLInputElement>(root, "input-threshold").value).toBe("0.5");
    expect(byTestId<HTMLInputElement>(root, "input-throttle").value).toBe("100");
  });

  it("rejects bad input inline and sends nothing", () => {
    const { root } = mount();
    input(root, "input-features", "1,x");
    byTestId(root, "btn-apply").click();
    expect(model.sent).toHaveLength(0);
    expect(byTestId(root, "form-error").textContent).toBe("'1,x' is not a feature list: 'x' is not an integer");
    expect(byTestId(root, "input-features").getAttribute("aria-invalid")).toBe("true");

    input(root, "input-features", "all");
    input(root, "input-history-size", "12.5");
    byTestId(root, "btn-apply").click();
    expect(model.sent).toHaveLength(0);
    expect(byTestId(root, "form-error").textContent).toBe("history size must be a whole number, got '12.5'");

    input(root, "input-history-size", "100");
    input(root, "input-throttle", "-1");
    byTestId(root, "btn-apply").click();
    expect(model.sent).toHaveLength(0);
    expect(byTestId(root, "form-error").textContent).toBe("throttle must be at least 0, got -1");

    input(root, "input-throttle", "100");
    input(root, "input-features", "5,1000"); // d_sae is 1000
    byTestId(root, "btn-apply").click();
    expect(model.sent).toHaveLength(0);
    expect(byTestId(root, "form-error").textContent).toContain("feature 1000 is out of range");
  });

  it("sends configure with the parsed changed values and shows the kernel's success message", () => {
    const { root } = mount();
    input(root, "input-features", "1,5,10-12");
    input(root, "input-history-size", "250");
    input(root, "input-threshold", "0.125");
    // Enter in a field submits the form, like the Apply button.
    byTestId<HTMLFormElement>(root, "input-threshold").form!.requestSubmit();
    expect(model.sent).toHaveLength(1);
    expect(model.lastSent()).toEqual({
      id: expect.any(Number),
      type: "configure",
      changes: { features: [1, 5, 10, 11, 12], history_size: 250, threshold: 0.125 },
    });
    expect(byTestId(root, "form-message").textContent).toBe("waiting for kernel…");
    model.reply(model.lastSent().id, true, "configuration updated");
    expect(byTestId(root, "form-message").textContent).toBe("configuration updated");
    expect(byTestId(root, "form-error").textContent).toBe("");
    vi.advanceTimersByTime(SUCCESS_MS + 10);
    expect(byTestId(root, "form-message").textContent).toBe("");
  });

  it("sends features: null for 'all'", () => {
    model = new FakeModel({ snapshot: snapshotMessage({ state: { monitored_features: [4, 5] } }) });
    const { root } = mount();
    input(root, "input-features", "all");
    byTestId(root, "btn-apply").click();
    expect(model.lastSent()).toMatchObject({ type: "configure", changes: { features: null } });
  });

  it("shows the kernel's error inline and keeps the user's text", () => {
    const { root } = mount();
    input(root, "input-top-k", "5000");
    byTestId(root, "btn-apply").click();
    expect(model.lastSent()).toMatchObject({ type: "configure", changes: { top_k: 5000 } });
    model.reply(model.lastSent().id, false, "", "top_k must be in 1..256, got 5000");
    expect(byTestId(root, "form-error").textContent).toBe("top_k must be in 1..256, got 5000");
    expect(byTestId(root, "form-message").textContent).toBe("");
    // A live update does not overwrite what the user typed.
    model.set("snapshot", snapshotMessage({ sequence: 2 }));
    vi.advanceTimersToNextFrame();
    expect(byTestId<HTMLInputElement>(root, "input-top-k").value).toBe("5000");
  });

  it("ignores replies to other clients' commands", () => {
    const { root } = mount();
    input(root, "input-top-k", "5");
    byTestId(root, "btn-apply").click();
    model.reply(model.lastSent().id + 1000, false, "", "someone else's error");
    expect(byTestId(root, "form-error").textContent).toBe("");
    expect(byTestId(root, "form-message").textContent).toBe("waiting for kernel…");
  });
});

describe("action buttons", () => {
  it("toggles enable from the kernel state and reports the reply", () => {
    const { root } = mount();
    const toggle = byTestId<HTMLButtonElement>(root, "btn-toggle");
    expect(toggle.tagName).toBe("BUTTON");
    expect(toggle.getAttribute("aria-label")).toBe("Pause monitoring");
    toggle.click();
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "enable", enabled: false });
    model.reply(model.lastSent().id, true, "monitoring paused");
    expect(byTestId(root, "actions-message").textContent).toBe("monitoring paused");
    model.set("snapshot", snapshotMessage({ sequence: 2, state: { enabled: false } }));
    vi.advanceTimersToNextFrame();
    expect(byTestId(root, "status-enabled").textContent).toContain("paused");
    expect(toggle.getAttribute("aria-label")).toBe("Enable monitoring");
    toggle.click();
    expect(model.lastSent()).toMatchObject({ type: "enable", enabled: true });
  });

  it("sends clear_history and reset_statistics; errors show inline", () => {
    const { root } = mount();
    byTestId(root, "btn-clear").click();
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "clear_history" });
    model.reply(model.lastSent().id, true, "cleared 10 records");
    expect(byTestId(root, "actions-message").textContent).toBe("cleared 10 records");
    byTestId(root, "btn-reset").click();
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "reset_statistics" });
    model.reply(model.lastSent().id, false, "", "RuntimeError: no SAE attached");
    expect(byTestId(root, "actions-error").textContent).toBe("RuntimeError: no SAE attached");
    expect(byTestId(root, "actions-message").textContent).toBe("");
    for (const id of ["btn-toggle", "btn-clear", "btn-reset", "btn-apply"]) {
      expect(byTestId(root, id).getAttribute("aria-label")).toBeTruthy();
    }
  });

  it("gives up on a reply after the timeout, says so, and ignores a late reply", () => {
    const { root } = mount();
    byTestId(root, "btn-clear").click();
    const id = model.lastSent().id as number;
    vi.advanceTimersByTime(REPLY_TIMEOUT_MS - 1);
    expect(byTestId(root, "actions-error").textContent).toBe("");
    vi.advanceTimersByTime(1);
    expect(byTestId(root, "actions-error").textContent).toContain("did not answer within 20 s");
    model.reply(id, true, "cleared 10 records"); // too late: already settled
    expect(byTestId(root, "actions-message").textContent).toBe("");
    // An answered command does not time out afterwards.
    byTestId(root, "btn-reset").click();
    model.reply(model.lastSent().id as number, true, "reset statistics of 3 features");
    vi.advanceTimersByTime(REPLY_TIMEOUT_MS);
    expect(byTestId(root, "actions-error").textContent).toBe("");
  });

  it("uses unique command ids", () => {
    const { root } = mount();
    byTestId(root, "btn-clear").click();
    byTestId(root, "btn-clear").click();
    byTestId(root, "btn-reset").click();
    const ids = model.sent.map((m) => m.id);
    expect(new Set(ids).size).toBe(3);
    expect(ids.every((id) => Number.isSafeInteger(id))).toBe(true);
  });
});

describe("cleanup", () => {
  it("removes listeners, timers, frames and plots", () => {
    const baseline = model.listenerCount();
    const { cleanup, root } = mount();
    expect(model.listenerCount()).toBe(baseline + 2);
    const toggle = byTestId(root, "btn-toggle");
    const header = root.querySelector<HTMLElement>('th[data-metric="max"]')!;
    const freqDiv = byTestId(root, "chart-frequency");
    const valuesDiv = byTestId(root, "chart-values");
    byTestId(root, "btn-clear").click(); // leaves a pending command
    model.set("snapshot", snapshotMessage({ sequence: 2 })); // leaves a pending frame
    const applied = window.__featmonStats!.applied;
    expect(vi.getTimerCount()).toBeGreaterThan(0);
    const sent = model.sent.length;

    cleanup();

    expect(model.listenerCount()).toBe(baseline);
    expect(vi.getTimerCount()).toBe(0); // tick interval, rAF and feedback timers all gone
    const purged = plotly.purge.mock.calls.map(([div]) => div);
    expect(purged).toContain(freqDiv);
    expect(purged).toContain(valuesDiv);
    expect(el.children).toHaveLength(0);
    // DOM listeners are gone: clicks on detached elements send nothing.
    toggle.click();
    header.click();
    expect(model.sent).toHaveLength(sent);
    // Snapshot changes and replies after cleanup do nothing.
    model.set("snapshot", snapshotMessage({ sequence: 3 }));
    model.reply(model.sent[0]!.id as number, true, "late");
    vi.advanceTimersByTime(5000);
    expect(window.__featmonStats!.applied).toBe(applied);
    cleanup(); // idempotent
  });

  it("cleans up when anywidget aborts the view's signal", () => {
    const controller = new AbortController();
    render(renderProps(model, el, controller.signal));
    vi.advanceTimersToNextFrame();
    expect(model.listenerCount()).toBe(2);
    controller.abort();
    expect(model.listenerCount()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    expect(el.children).toHaveLength(0);
  });
});
