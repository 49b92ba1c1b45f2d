/** Enable/Pause toggle, Clear history and Reset statistics buttons. */

import type { Component, ViewContext } from "./component";
import { h, setAttr, setText } from "./dom";
import { Feedback } from "./feedback";
import type { Snapshot } from "./protocol";

export class Controls implements Component {
  readonly el: HTMLElement;
  readonly toggle: HTMLButtonElement;
  readonly clear: HTMLButtonElement;
  readonly reset: HTMLButtonElement;
  readonly feedback = new Feedback("actions");
  private enabled: boolean | null = null;

  constructor(private readonly ctx: ViewContext) {
    const { signal } = ctx;
    this.toggle = h("button", {
      type: "button",
      class: "featmon-button primary",
      "data-testid": "btn-toggle",
      "aria-label": "Pause monitoring",
      disabled: true,
    });
    this.clear = h(
      "button",
      { type: "button", class: "featmon-button", "data-testid": "btn-clear", "aria-label": "Clear history" },
      "Clear history",
    );
    this.reset = h(
      "button",
      {
        type: "button",
        class: "featmon-button",
        "data-testid": "btn-reset",
        "aria-label": "Reset statistics",
      },
      "Reset statistics",
    );
    this.toggle.addEventListener("click", () => this.onToggle(), { signal });
    this.clear.addEventListener(
      "click",
      () => this.run({ type: "clear_history" }, "history cleared"),
      { signal },
    );
    this.reset.addEventListener(
      "click",
      () => this.run({ type: "reset_statistics" }, "statistics reset"),
      { signal },
    );
    this.el = h(
      "div",
      { class: "featmon-controls", role: "group", "aria-label": "Monitor controls" },
      this.toggle,
      this.clear,
      this.reset,
      this.feedback.el,
    );
    this.update(null);
  }

  update(snapshot: Snapshot | null): void {
    this.enabled = snapshot ? snapshot.state.enabled : null;
    const on = this.enabled === true;
    this.toggle.disabled = this.enabled === null;
    setText(this.toggle, on ? "❚❚ Pause" : "▶ Enable");
    setAttr(this.toggle, "aria-label", on ? "Pause monitoring" : "Enable monitoring");
    setAttr(this.toggle, "aria-pressed", on ? "true" : "false");
  }

  private onToggle(): void {
    if (this.enabled === null) return;
    const enabled = !this.enabled;
    this.run({ type: "enable", enabled }, enabled ? "monitoring enabled" : "monitoring paused");
  }

  private run(
    body: { type: "clear_history" } | { type: "reset_statistics" } | { type: "enable"; enabled: boolean },
    fallback: string,
  ): void {
    this.feedback.pending();
    this.ctx.commands.send(body, (reply) => this.feedback.reply(reply, fallback));
  }

  destroy(): void {
    this.feedback.destroy();
  }
}
