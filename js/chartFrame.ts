/**
 * The frame every chart shares: a titled section with a "log y" checkbox, the plot and a text
 * note, plus the cheap `update` that only schedules a redraw. Subclasses supply the
 * note text and the plotly drawing.
 */

import type { Component, ViewContext } from "./component";
import { h } from "./dom";
import { PlotArea } from "./plot";
import type { Snapshot } from "./protocol";

export interface ChartFrameOptions {
  /** aria-label of the section. */
  label: string;
  /** Visible heading. */
  title: string;
  plotTestId: string;
  /** aria-label of the plot (it has role="img"). */
  plotLabel: string;
  noteTestId: string;
  logYTestId: string;
  /** Whether log y starts checked (differs per chart: counts spanning decades want log). */
  logYDefault: boolean;
}

export abstract class ChartFrame implements Component {
  readonly el: HTMLElement;
  readonly plot: PlotArea;
  protected readonly note: HTMLDivElement;
  protected readonly logY: HTMLInputElement;
  protected snapshot: Snapshot | null = null;

  /**
   * `requestDraw` asks the view to call `draw()` later (rate-limited, off the snapshot apply);
   * without it, whoever owns the chart calls `draw()` itself.
   */
  constructor(
    ctx: ViewContext,
    options: ChartFrameOptions,
    private readonly requestDraw: () => void = () => {},
  ) {
    this.plot = new PlotArea(options.plotTestId, options.plotLabel);
    this.note = h("div", { class: "featmon-chart-note", "data-testid": options.noteTestId });
    this.logY = h("input", {
      type: "checkbox",
      "data-testid": options.logYTestId,
      checked: options.logYDefault,
    });
    // Toggling the scale changes nothing in the snapshot, so the draw must be forced.
    this.logY.addEventListener("change", () => this.draw(true), { signal: ctx.signal });
    this.el = h(
      "section",
      { class: "featmon-chart", "aria-label": options.label },
      h(
        "div",
        { class: "featmon-chart-head" },
        h("h3", {}, options.title),
        h("label", { class: "featmon-check" }, this.logY, "log y"),
      ),
      this.plot.div,
      this.note,
    );
  }

  /** Cheap: keep the snapshot, update the text note and ask for a (later) chart redraw. */
  update(snapshot: Snapshot | null): void {
    this.snapshot = snapshot;
    this.updateNote();
    this.requestDraw();
  }

  /** Draw the latest snapshot with plotly if anything drawn changed (or `force`). */
  abstract draw(force?: boolean): void;

  /** Set the note's text from `this.snapshot` (runs on every update, so keep it cheap). */
  protected abstract updateNote(): void;

  destroy(): void {
    this.plot.destroy();
  }
}
