/** Status header: enabled, hook, totals, tokens/s, age of the last update (ticking), errors. */

import type { Component } from "./component";
import { h, setAttr, setText } from "./dom";
import { DASH, formatAge, formatClock, formatInt, formatRate } from "./format";
import type { Snapshot } from "./protocol";
import { RateMeter } from "./rate";

/** With no snapshot for this long the monitor is shown as idle (0 tokens/s). */
export const IDLE_AFTER_S = 5;

export class StatusHeader implements Component {
  readonly el: HTMLElement;
  private readonly enabled = h("span", { class: "featmon-badge", "data-testid": "status-enabled" });
  private readonly hook = h("span", { class: "featmon-hook", "data-testid": "status-hook" });
  private readonly tokens = h("span", { class: "featmon-num", "data-testid": "status-tokens" });
  private readonly forwards = h("span", { class: "featmon-num", "data-testid": "status-forwards" });
  private readonly rateEl = h("span", { class: "featmon-num", "data-testid": "status-rate" });
  private readonly age = h("span", { "data-testid": "status-age" });
  private readonly history = h("span", { class: "featmon-num", "data-testid": "status-history" });
  private readonly errors = h("span", { class: "featmon-errors", "data-testid": "status-errors" });
  private readonly dropped = h("span", {
    class: "featmon-errors has-errors",
    "data-testid": "status-dropped",
    hidden: "",
  });
  private readonly meter = new RateMeter();
  /** Local time (ms since epoch) the shown snapshot arrived; null before the first one. */
  private receivedAt: number | null = null;
  private lastSequence = -1;

  constructor(private readonly now: () => number = Date.now) {
    const item = (label: string, value: HTMLElement) =>
      h("span", { class: "featmon-stat" }, h("span", { class: "featmon-label" }, label), value);
    this.el = h(
      "div",
      { class: "featmon-status", "data-testid": "status" },
      this.enabled,
      this.hook,
      item("tokens", this.tokens),
      item("forward passes", this.forwards),
      item("tokens/s", this.rateEl),
      item("updated", this.age),
      item("history", this.history),
      this.errors,
      this.dropped,
    );
    this.update(null);
  }

  /**
   * `receivedAt`: when the snapshot arrived (ms since epoch). The first snapshot a view shows may
   * be old (a re-rendered view): its kernel timestamp bounds the age then.
   */
  update(snapshot: Snapshot | null, receivedAt?: number): void {
    if (snapshot === null) {
      setText(this.enabled, "waiting");
      this.enabled.className = "featmon-badge waiting";
      setText(this.hook, "waiting for the first snapshot…");
      for (const el of [this.tokens, this.forwards, this.rateEl, this.age, this.history]) {
        setText(el, DASH);
      }
      setText(this.errors, "errors: 0");
      this.dropped.hidden = true;
      this.receivedAt = null;
      return;
    }
    const s = snapshot.state;
    const now = receivedAt ?? this.now();
    if (snapshot.sequence !== this.lastSequence || this.receivedAt === null) {
      this.receivedAt =
        this.receivedAt === null ? Math.min(now, snapshot.timestamp * 1000 || now) : now;
      this.lastSequence = snapshot.sequence;
      this.meter.add(snapshot.timestamp, s.total_tokens);
    }

    setText(this.enabled, s.enabled ? "● live" : "❚❚ paused");
    this.enabled.className = `featmon-badge ${s.enabled ? "live" : "paused"}`;
    setAttr(this.enabled, "title", s.enabled ? "monitoring is enabled" : "monitoring is paused");

    const parts: string[] = [];
    if (s.hook_attached) parts.push(`hook ${s.hook_point ?? "(unnamed)"}`);
    else parts.push("no hook attached");
    if (s.sae_attached) parts.push(`SAE ${s.sae_id ?? "(unnamed)"}`);
    else parts.push("no SAE");
    parts.push(`d_sae ${formatInt(s.d_sae)}`);
    if (s.device) parts.push(s.device);
    setText(this.hook, parts.join(" · "));
    this.hook.classList.toggle("detached", !s.hook_attached);
    setAttr(this.hook, "title", `statistics since ${formatClock(s.since)}`);

    setText(this.tokens, formatInt(s.total_tokens));
    setAttr(this.tokens, "title", String(s.total_tokens));
    setText(this.forwards, formatInt(s.forward_passes));
    setText(this.history, `${formatInt(s.history_count)} / ${formatInt(s.history_size)}`);

    if (s.errors > 0) {
      setText(this.errors, `errors: ${formatInt(s.errors)}${s.last_error ? ` — ${s.last_error}` : ""}`);
      this.errors.classList.add("has-errors");
      setAttr(this.errors, "title", s.last_error ?? "");
    } else {
      setText(this.errors, "errors: 0");
      this.errors.classList.remove("has-errors");
      setAttr(this.errors, "title", null);
    }
    // Sparse indices outside 0..d_sae-1 are ignored, never a crash: say so instead of hiding it.
    const dropped = s.dropped_indices ?? 0;
    this.dropped.hidden = dropped === 0;
    setText(this.dropped, dropped ? `ignored indices: ${formatInt(dropped)}` : "");
    setAttr(
      this.dropped,
      "title",
      dropped ? `sparse feature indices outside 0..${s.d_sae - 1} were ignored` : null,
    );
    this.tick();
  }

  /** Refresh the age and the rate; called every second by the view. */
  tick(): void {
    if (this.receivedAt === null) return;
    const ageS = (this.now() - this.receivedAt) / 1000;
    setText(this.age, `${formatAge(ageS)} ago`);
    const rate = ageS > IDLE_AFTER_S ? 0 : this.meter.rate();
    setText(this.rateEl, formatRate(rate));
    setAttr(this.rateEl, "title", ageS > IDLE_AFTER_S ? `no update for ${IDLE_AFTER_S} s` : null);
  }

  destroy(): void {
    this.meter.reset();
  }
}
