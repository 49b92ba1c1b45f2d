/**
 * The configure form: features (`all` or `1,5,10-20`), history size, top-k, threshold, throttle.
 *
 * Fields follow the kernel's state until the user edits them; Apply validates every field in the
 * browser first (bad input shows an error and sends nothing), then sends `configure` with the
 * values that differ from the kernel's state. Errors from the kernel are shown inline.
 */

import type { Component, ViewContext } from "./component";
import { h } from "./dom";
import { Feedback } from "./feedback";
import { type Parsed, formatFeatureList, parseFeatureList, parseInteger, parseNumber } from "./parse";
import type { ConfigureChanges, FormSetting, MonitorState, Snapshot } from "./protocol";
import { HISTORY_SIZE_RANGE, TOP_K_RANGE } from "./protocolConstants";

type Field = FormSetting;

interface FieldDef {
  field: Field;
  label: string;
  testid: string;
  inputmode: string;
  hint: string;
  fromState: (s: MonitorState) => string;
}

const FIELDS: FieldDef[] = [
  {
    field: "features",
    label: "Features",
    testid: "input-features",
    inputmode: "text",
    hint: "all, or a list with ranges: 1,5,10-20",
    fromState: (s) => formatFeatureList(s.monitored_features),
  },
  {
    field: "history_size",
    label: "History size",
    testid: "input-history-size",
    inputmode: "numeric",
    hint: "tokens kept in the history",
    fromState: (s) => String(s.history_size),
  },
  {
    field: "top_k",
    label: "Top-k per token",
    testid: "input-top-k",
    inputmode: "numeric",
    hint: "strongest features recorded per token",
    fromState: (s) => String(s.top_k),
  },
  {
    field: "threshold",
    label: "Threshold",
    testid: "input-threshold",
    inputmode: "decimal",
    hint: "a feature is active when its value is above this",
    fromState: (s) => String(s.threshold),
  },
  {
    field: "throttle_ms",
    label: "Throttle (ms)",
    testid: "input-throttle",
    inputmode: "decimal",
    hint: "minimum time between live updates",
    fromState: (s) => String(s.throttle_ms),
  },
];

let formCounter = 0;

export class ConfigForm implements Component {
  readonly el: HTMLFormElement;
  readonly inputs = {} as Record<Field, HTMLInputElement>;
  readonly apply: HTMLButtonElement;
  readonly feedback = new Feedback("form");
  private readonly dirty = new Set<Field>();
  private state: MonitorState | null = null;

  constructor(private readonly ctx: ViewContext) {
    const { signal } = ctx;
    const uid = `featmon-form-${++formCounter}`;
    const rows: HTMLElement[] = [];
    for (const def of FIELDS) {
      const id = `${uid}-${def.field}`;
      const input = h("input", {
        id,
        type: "text",
        inputmode: def.inputmode,
        autocomplete: "off",
        spellcheck: "false",
        class: `featmon-input ${def.field}`,
        "data-testid": def.testid,
        name: def.field,
        title: def.hint,
        placeholder: def.field === "features" ? "all" : "",
      });
      input.addEventListener(
        "input",
        () => {
          this.dirty.add(def.field);
          input.removeAttribute("aria-invalid");
        },
        { signal },
      );
      this.inputs[def.field] = input;
      rows.push(h("label", { for: id, class: "featmon-field" }, h("span", {}, def.label), input));
    }
    this.apply = h(
      "button",
      {
        type: "submit",
        class: "featmon-button primary",
        "data-testid": "btn-apply",
        "aria-label": "Apply configuration",
      },
      "Apply",
    );
    this.el = h(
      "form",
      { class: "featmon-form", "aria-label": "Monitor configuration", novalidate: true },
      ...rows,
      h("div", { class: "featmon-form-actions" }, this.apply, this.feedback.el),
    );
    this.el.addEventListener(
      "submit",
      (event) => {
        event.preventDefault();
        this.submit();
      },
      { signal },
    );
    this.update(null);
  }

  update(snapshot: Snapshot | null): void {
    this.state = snapshot ? snapshot.state : null;
    const active = this.el.ownerDocument.activeElement;
    for (const def of FIELDS) {
      const input = this.inputs[def.field];
      if (this.dirty.has(def.field) || input === active) continue;
      const value = this.state ? def.fromState(this.state) : "";
      if (input.value !== value) input.value = value;
    }
  }

  /** Validate all fields; returns the changes to send, or null after showing an error. */
  collect(): ConfigureChanges | null {
    const v = (f: Field) => this.inputs[f].value;
    const dSae = this.state && this.state.d_sae > 0 ? this.state.d_sae : undefined;
    const parsed: { [F in Field]: Parsed<ConfigureChanges[F]> } = {
      features: parseFeatureList(v("features"), dSae),
      history_size: parseInteger("history size", v("history_size"), HISTORY_SIZE_RANGE[0]),
      top_k: parseInteger("top-k", v("top_k"), TOP_K_RANGE[0]),
      threshold: parseNumber("threshold", v("threshold")),
      throttle_ms: parseNumber("throttle", v("throttle_ms"), 0),
    };
    for (const def of FIELDS) this.inputs[def.field].removeAttribute("aria-invalid");
    for (const def of FIELDS) {
      const result = parsed[def.field];
      if (!result.ok) {
        const input = this.inputs[def.field];
        input.setAttribute("aria-invalid", "true");
        this.feedback.fail(result.error);
        return null;
      }
    }
    const changes: ConfigureChanges = {};
    const s = this.state;
    const value = <F extends Field>(f: F) =>
      (parsed[f] as { ok: true; value: ConfigureChanges[F] }).value;
    const features = value("features");
    if (!s || !sameFeatures(features ?? null, s.monitored_features)) changes.features = features ?? null;
    const history = value("history_size")!;
    if (!s || history !== s.history_size) changes.history_size = history;
    const topK = value("top_k")!;
    if (!s || topK !== s.top_k) changes.top_k = topK;
    const threshold = value("threshold")!;
    if (!s || threshold !== s.threshold) changes.threshold = threshold;
    const throttle = value("throttle_ms")!;
    if (!s || throttle !== s.throttle_ms) changes.throttle_ms = throttle;
    return changes;
  }

  submit(): void {
    const changes = this.collect();
    if (changes === null) return;
    if (Object.keys(changes).length === 0) {
      this.dirty.clear();
      this.feedback.success("nothing to change");
      return;
    }
    this.feedback.pending();
    this.ctx.commands.send({ type: "configure", changes }, (reply) => {
      this.feedback.reply(reply, "configuration applied");
      // Applied: follow the kernel's state again. Rejected: keep the user's text to fix it.
      if (reply.ok) this.dirty.clear();
    });
  }

  destroy(): void {
    this.feedback.destroy();
  }
}

function sameFeatures(a: readonly number[] | null, b: readonly number[] | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((f, i) => f === b[i]);
}

