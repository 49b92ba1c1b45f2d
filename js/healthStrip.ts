/** Health strip: is the SAE still faithful (L0, FVU, cosine, dead / ultra-rare features), and
 * what monitoring costs (time per forward, memory, records dropped), plus watch hits. */

import type { Component } from "./component";
import { h, setAttr, setText } from "./dom";
import { DASH, formatFloat, formatInt } from "./format";
import type { Snapshot } from "./protocol";

/** Bytes as KB / MB / GB (powers of 1000). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return DASH;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function maybe(value: number | null | undefined, format: (v: number) => string): string {
  return value === null || value === undefined || !Number.isFinite(value) ? DASH : format(value);
}

export class HealthStrip implements Component {
  readonly el: HTMLElement;
  private readonly fields = new Map<string, HTMLElement>();

  constructor() {
    const item = (key: string, label: string, title: string) => {
      const value = h("span", { class: "featmon-num", "data-testid": `health-${key}` });
      this.fields.set(key, value);
      return h("span", { class: "featmon-stat", title }, h("span", { class: "featmon-label" }, label), value);
    };
    this.el = h(
      "div",
      { class: "featmon-status featmon-health", "data-testid": "health" },
      item("l0", "L0", "mean active features per token (every token since the threshold was set)"),
      item("fvu", "FVU", "fraction of the SAE input's variance its reconstruction leaves unexplained (sampled forwards)"),
      item("cosine", "cos", "mean cosine of input and reconstruction (sampled forwards)"),
      item("dead", "dead", "features never active since the threshold was set"),
      item("rare", "ultra-rare", "features active on fewer than the rare floor of the tokens"),
      item("overhead", "monitor", "time per forward spent in the monitor: the SAE's encode when the monitor runs it (a hooked model), plus recording the features"),
      item("memory", "memory", "device memory the monitor holds"),
      item("dropped", "records dropped", "history records overwritten by newer ones"),
      item("watch-hits", "watch hits", "hits of the watched features delivered so far"),
    );
    this.update(null);
  }

  private set(key: string, text: string, title?: string): void {
    const el = this.fields.get(key)!;
    setText(el, text);
    if (title !== undefined) setAttr(el, "title", title);
  }

  update(snapshot: Snapshot | null): void {
    const health = snapshot?.oversight.health ?? null;
    const state = snapshot?.state;
    this.set("l0", maybe(health?.l0_mean, formatFloat));
    this.set("fvu", maybe(health?.fvu, formatFloat), health ? `${formatInt(health.reconstruction_tokens)} tokens sampled, every ${health.health_every}th forward` : "");
    this.set("cosine", maybe(health?.cosine, formatFloat));
    this.set("dead", maybe(health?.dead, formatInt));
    this.set("rare", maybe(health?.ultra_rare, formatInt), health ? `active on fewer than ${health.rare_floor} of the tokens` : "");
    this.set("overhead", maybe(state?.monitor_ms, (ms) => `${formatFloat(ms)} ms/forward`));
    this.set("memory", maybe(state?.device_bytes, formatBytes));
    this.set("dropped", maybe(state?.records_dropped, formatInt));
    this.set("watch-hits", snapshot ? formatInt(snapshot.oversight.watchHits) : DASH);
    this.fields.get("watch-hits")!.parentElement!.hidden = !snapshot || snapshot.oversight.watched.length === 0;
  }

  destroy(): void {}
}
