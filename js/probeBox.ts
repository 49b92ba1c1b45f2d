/**
 * The test box, below the selected features' panels: type a text and the kernel runs the
 * attached model on it (`probe`, nothing recorded); the text comes back token by token, shaded
 * by the chosen selected feature's activation. Hovering a token lists its top features (with
 * labels); clicking a token keeps its list; clicking a feature there selects it (`select`).
 */

import type { Component, ViewContext } from "./component";
import { h, setText } from "./dom";
import { Feedback } from "./feedback";
import { tokenShade } from "./featurePanels";
import { formatFloat } from "./format";
import {
  MAX_SELECTED,
  PROBE_TEXT_CHARS,
  type ProbeData,
  ProtocolError,
  type Snapshot,
  decodeProbeData,
} from "./protocol";

/** `current` with `feature` added (kept if there), at most `max`, dropping the oldest. */
export function addSelection(current: readonly number[], feature: number, max = MAX_SELECTED): number[] {
  if (current.includes(feature)) return [...current];
  const next = [...current, feature];
  while (next.length > max) next.shift();
  return next;
}

export class ProbeBox implements Component {
  readonly el: HTMLElement;
  private readonly input = h("textarea", {
    class: "featmon-probe-input",
    rows: 2,
    maxlength: PROBE_TEXT_CHARS,
    placeholder: "Type a text to see which features fire on each token",
    "aria-label": "Text to test",
    "data-testid": "probe-text",
  });
  private readonly feature = h("select", { "aria-label": "Feature that shades the tokens", "data-testid": "probe-feature" });
  private readonly run = h("button", { type: "submit", "data-testid": "probe-run" }, "Test");
  private readonly feedback = new Feedback("probe");
  private readonly tokens = h("div", { class: "featmon-probe-tokens", "data-testid": "probe-tokens" });
  private readonly details = h("div", { class: "featmon-probe-top", "data-testid": "probe-top" });
  private readonly note = h("p", { class: "featmon-chart-note", "data-testid": "probe-note" });
  private selected: number[] = [];
  private result: ProbeData | null = null;
  private pinned: number | null = null;
  private lastId = -1;

  constructor(private readonly ctx: ViewContext) {
    const form = h(
      "form",
      { class: "featmon-probe-form" },
      this.input,
      h("label", {}, "shade by ", this.feature),
      this.run,
      this.feedback.el,
    );
    this.el = h(
      "section",
      { class: "featmon-probe", "aria-label": "Test a text", "data-testid": "probe-box" },
      h("h4", {}, "Test a text"),
      form,
      this.note,
      this.tokens,
      this.details,
    );
    const opts = { signal: ctx.signal };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    }, opts);
    this.feature.addEventListener("change", () => {
      if (this.result) this.send();
    }, opts);
    this.tokens.addEventListener("mouseover", (e) => {
      const i = this.tokenIndex(e.target);
      if (i !== null && this.pinned === null) this.showTop(i);
    }, opts);
    this.tokens.addEventListener("click", (e) => {
      const i = this.tokenIndex(e.target);
      if (i === null) return;
      this.pinned = this.pinned === i ? null : i;
      this.markPinned();
      this.showTop(i);
    }, opts);
    this.details.addEventListener("click", (e) => {
      const button = (e.target as Element | null)?.closest("button[data-feature]");
      if (button) this.select(Number(button.getAttribute("data-feature")));
    }, opts);
    this.updateFeatures();
  }

  update(snapshot: Snapshot | null): void {
    const selected = snapshot?.state.selected_features ?? [];
    if (selected.join(",") === this.selected.join(",")) return;
    this.selected = [...selected];
    this.updateFeatures();
  }

  destroy(): void {
    this.feedback.destroy();
    this.lastId = -1;
    this.tokens.replaceChildren();
    this.details.replaceChildren();
  }

  /** Send the text to the kernel (the latest reply wins). */
  send(): void {
    const text = this.input.value;
    if (!text.trim()) {
      this.feedback.fail("type a text first");
      return;
    }
    const chosen = this.feature.value === "" ? null : Number(this.feature.value);
    this.feedback.pending("running the model…");
    const id = this.ctx.commands.send({ type: "probe", text, feature: chosen }, (reply) => {
      if (id !== this.lastId) return; // a newer probe was sent
      if (!reply.ok) {
        this.feedback.reply(reply);
        return;
      }
      try {
        this.show(decodeProbeData(reply.data));
        this.feedback.reply(reply);
      } catch (err) {
        this.feedback.fail(err instanceof ProtocolError ? err.message : String(err));
      }
    });
    this.lastId = id;
  }

  private show(data: ProbeData): void {
    this.result = data;
    this.pinned = null;
    const max = Math.max(0, ...data.values.filter((v): v is number => v !== null));
    const spans = data.tokens.map((text, i) => {
      const value = data.values[i] ?? null;
      const span = h(
        "span",
        {
          class: "featmon-tok",
          "data-index": i,
          tabindex: 0,
          title: data.feature === null ? "hover: top features" : `feature ${data.feature}: ${formatFloat(value ?? NaN)}`,
        },
        text,
      );
      span.style.background = tokenShade(value, max);
      return span;
    });
    this.tokens.replaceChildren(...spans);
    this.details.replaceChildren();
    const shaded = data.feature === null ? "no feature selected to shade by" : `shaded by feature ${data.feature}`;
    setText(
      this.note,
      `${data.tokens.length} tokens, ${shaded}${data.truncated ? " (cut short)" : ""}; ` +
        "hover a token for its top features, click one to select it",
    );
  }

  private showTop(i: number): void {
    const data = this.result;
    if (!data) return;
    const top = data.top[i] ?? [];
    const rows = top.map(([feature, value]) => {
      const label = data.labels[String(feature)];
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "featmon-feature",
            "data-feature": feature,
            "aria-label": `Select feature ${feature}`,
          },
          String(feature),
        ),
        label ? h("span", { class: "featmon-label" }, label) : "",
        h("span", { class: "featmon-example-value" }, ` ${formatFloat(value ?? NaN)}`),
      );
    });
    this.details.replaceChildren(
      h("span", { class: "featmon-chart-note" }, `token '${data.tokens[i] ?? ""}': `),
      rows.length ? h("ol", { class: "featmon-probe-list" }, ...rows) : "no feature above the threshold",
    );
  }

  private select(feature: number): void {
    if (!Number.isInteger(feature)) return;
    const features = addSelection(this.selected, feature);
    this.feedback.pending();
    this.ctx.commands.send({ type: "select", features }, (reply) => this.feedback.reply(reply, `selected feature ${feature}`));
  }

  private tokenIndex(target: EventTarget | null): number | null {
    const span = (target as Element | null)?.closest?.("span[data-index]");
    return span ? Number(span.getAttribute("data-index")) : null;
  }

  private markPinned(): void {
    for (const span of Array.from(this.tokens.children)) {
      span.classList.toggle("pinned", span.getAttribute("data-index") === String(this.pinned));
    }
  }

  private updateFeatures(): void {
    const keep = this.feature.value;
    const options = this.selected.map((f) => h("option", { value: f }, `feature ${f}`));
    if (!options.length) options.push(h("option", { value: "" }, "none selected"));
    this.feature.replaceChildren(...options);
    const last = this.selected[this.selected.length - 1];
    this.feature.value = this.selected.map(String).includes(keep) ? keep : last === undefined ? "" : String(last);
  }
}
