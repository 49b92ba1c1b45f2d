/**
 * One view of the widget: builds the components, applies snapshot changes once per animation
 * frame (status, table, records; the charts only schedule their redraw), redraws the charts on a
 * later frame at a bounded rate, ticks the status header, and returns a cleanup that removes
 * everything it added.
 */

import type { RenderProps } from "@anywidget/types";
import { CommandClient } from "./commands";
import type { Component, ViewContext } from "./component";
import { ConfigForm } from "./configForm";
import { FeaturePanels } from "./featurePanels";
import { Controls } from "./controls";
import { h, setText } from "./dom";
import { DriftView } from "./driftView";
import { FrequencyChart } from "./frequencyChart";
import { HealthStrip } from "./healthStrip";
import { type Snapshot, decodeSnapshot } from "./protocol";
import { ProbeBox } from "./probeBox";
import { RecentRecords } from "./records";
import { watchTheme } from "./plot";
import { CHART_INTERVAL_MS, FrameScheduler, ThrottledFrame } from "./schedule";
import { featmonStats, recordApply, recordChart } from "./stats";
import { StatusHeader } from "./status";
import { TopTable } from "./table";
import { ValuesChart } from "./valuesChart";

/** The synced traits this frontend reads. */
export interface FeatmonModel {
  snapshot: Record<string, unknown>;
}

export const TICK_MS = 1000;

export function render({ model, el, signal }: RenderProps<FeatmonModel>): () => void {
  featmonStats();
  const controller = new AbortController();
  const commands = new CommandClient(model);
  const ctx: ViewContext = { commands, signal: controller.signal };

  const status = new StatusHeader();
  const controls = new Controls(ctx);
  const form = new ConfigForm(ctx);
  // Charts redraw off the snapshot apply, on their own frame, at most every CHART_INTERVAL_MS,
  // always with the latest snapshot (a trailing redraw follows the last change).
  const charts = new ThrottledFrame(() => {
    const t0 = performance.now();
    frequency.draw();
    values.draw();
    recordChart(performance.now() - t0);
  }, CHART_INTERVAL_MS);
  const requestCharts = (): void => charts.request();
  const frequency = new FrequencyChart(ctx, requestCharts);
  const values = new ValuesChart(ctx, requestCharts);
  const table = new TopTable(ctx);
  const records = new RecentRecords();
  const panels = new FeaturePanels(ctx);
  const probe = new ProbeBox(ctx);
  panels.el.append(probe.el); // the test box sits in the selected features' panel area
  const health = new HealthStrip();
  const drift = new DriftView();
  const components: Component[] = [status, health, controls, form, frequency, values, panels, probe, drift, table, records];

  const problem = h("div", {
    class: "featmon-problem",
    role: "alert",
    "data-testid": "snapshot-error",
  });
  problem.hidden = true;

  const root = h(
    "div",
    { class: "featmon", "data-testid": "featmon-root" },
    status.el,
    health.el,
    problem,
    h("div", { class: "featmon-row featmon-settings" }, controls.el, form.el),
    h("div", { class: "featmon-row featmon-charts" }, frequency.el, values.el),
    panels.el,
    drift.el,
    h("div", { class: "featmon-row featmon-lower" }, table.el, records.el),
  );
  el.append(root);

  const apply = (): void => {
    const t0 = performance.now();
    let snapshot: Snapshot | null;
    try {
      snapshot = decodeSnapshot(model.get("snapshot"));
    } catch (err) {
      // Keep showing the last good snapshot; say why the new one was not drawn.
      setText(problem, `Cannot show this snapshot: ${err instanceof Error ? err.message : String(err)}`);
      problem.hidden = false;
      return;
    }
    problem.hidden = true;
    const now = Date.now();
    status.update(snapshot, now);
    for (const c of components) if (c !== status) c.update(snapshot);
    recordApply(performance.now() - t0);
  };

  const scheduler = new FrameScheduler(apply);
  const onSnapshot = (): void => scheduler.request();
  model.on("change:snapshot", onSnapshot);
  scheduler.request(); // first draw on the next frame, once the view is attached
  const ticker = setInterval(() => status.tick(), TICK_MS);
  const unwatchTheme = watchTheme(requestCharts);

  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    model.off("change:snapshot", onSnapshot);
    commands.close();
    scheduler.cancel();
    charts.cancel();
    clearInterval(ticker);
    unwatchTheme();
    controller.abort();
    for (const c of components) c.destroy();
    root.remove();
    signal?.removeEventListener("abort", cleanup);
  };
  signal?.addEventListener("abort", cleanup, { once: true });
  return cleanup;
}
