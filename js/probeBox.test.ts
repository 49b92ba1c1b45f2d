import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { CommandClient, REPLY_TIMEOUT_MS } from "./commands";
import type { ViewContext } from "./component";
import { ProbeBox, addSelection } from "./probeBox";
import { PROBE_TEXT_CHARS, ProtocolError, decodeProbeData, decodeSnapshot, decodeTopTokens } from "./protocol";
import { topTokensText } from "./table";
import { FakeModel, snapshotMessage } from "./testing";
import type { AnyModel } from "@anywidget/types";

const DATA = {
  feature: 4,
  tokens: ["The", " cat", " sat"],
  values: [0, 2.5, 1],
  top: [[], [[4, 2.5], [9, 1.25]], [[9, 3]]],
  labels: { "9": "animals" },
  truncated: false,
};

function byTestId<T extends HTMLElement = HTMLElement>(root: ParentNode, id: string): T {
  const el = root.querySelector<T>(`[data-testid="${id}"]`);
  if (!el) throw new Error(`no element with data-testid=${id}`);
  return el;
}

let model: FakeModel;
let controller: AbortController;
let box: ProbeBox;

function mountBox(selected: number[] = [4, 7]): ProbeBox {
  const commands = new CommandClient(model as unknown as AnyModel);
  const ctx: ViewContext = { commands, signal: controller.signal };
  const view = new ProbeBox(ctx);
  document.body.append(view.el);
  view.update(decodeSnapshot(snapshotMessage({ state: { selected_features: selected } })));
  return view;
}

function typeAndRun(text: string): void {
  byTestId<HTMLTextAreaElement>(box.el, "probe-text").value = text;
  box.el.querySelector("form")!.requestSubmit();
}

beforeEach(() => {
  vi.useFakeTimers();
  model = new FakeModel({ snapshot: snapshotMessage() });
  controller = new AbortController();
  box = mountBox();
});

afterEach(() => {
  controller.abort();
  box.destroy();
  box.el.remove();
  vi.useRealTimers();
});

describe("test box", () => {
  it("sends a probe of the text for the last selected feature, bounded in length", () => {
    expect(byTestId<HTMLTextAreaElement>(box.el, "probe-text").maxLength).toBe(PROBE_TEXT_CHARS);
    expect(byTestId<HTMLSelectElement>(box.el, "probe-feature").value).toBe("7");
    typeAndRun("The cat sat");
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "probe", text: "The cat sat", feature: 7 });
  });

  it("shows the reply token by token, shaded by the feature's activation", () => {
    typeAndRun("The cat sat");
    model.reply(model.lastSent().id, true, "probed 3 tokens", null, DATA);
    const tokens = Array.from(byTestId(box.el, "probe-tokens").querySelectorAll<HTMLElement>(".featmon-tok"));
    expect(tokens.map((t) => t.textContent)).toEqual(["The", " cat", " sat"]);
    expect(tokens[0]!.style.background).toBe(""); // zero: no shade
    expect(tokens[1]!.style.background).toContain("0.8"); // the maximum: the strongest shade
    expect(tokens[2]!.style.background).not.toBe("");
    expect(tokens[1]!.title).toBe("feature 4: 2.5");
    expect(byTestId(box.el, "probe-note").textContent).toContain("3 tokens, shaded by feature 4");
    expect(byTestId(box.el, "probe-message").textContent).toBe("probed 3 tokens");
  });

  it("lists a hovered token's top features with labels; clicking one selects it", () => {
    typeAndRun("The cat sat");
    model.reply(model.lastSent().id, true, "probed 3 tokens", null, DATA);
    const tokens = byTestId(box.el, "probe-tokens").querySelectorAll<HTMLElement>(".featmon-tok");
    tokens[1]!.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    const top = byTestId(box.el, "probe-top");
    const items = Array.from(top.querySelectorAll("li"));
    expect(items.map((li) => li.textContent)).toEqual(["4 2.5", "9animals 1.25"]);
    expect(top.querySelector(".featmon-label")!.textContent).toBe("animals");
    // Pin the token, then hovering another does not replace its list.
    tokens[1]!.click();
    tokens[2]!.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(top.querySelectorAll("li").length).toBe(2);
    expect(tokens[1]!.classList.contains("pinned")).toBe(true);
    top.querySelector<HTMLButtonElement>('button[data-feature="9"]')!.click();
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "select", features: [4, 7, 9] });
    tokens[0]!.click();
    expect(top.textContent).toContain("no feature above the threshold");
  });

  it("shows the kernel's error, ignores a stale reply, and times out clearly", () => {
    typeAndRun("first");
    const first = model.lastSent().id;
    typeAndRun("second");
    const second = model.lastSent().id;
    model.reply(first, true, "probed 3 tokens", null, DATA); // stale: ignored
    expect(byTestId(box.el, "probe-tokens").children.length).toBe(0);
    model.reply(second, false, "", "probe needs an attached model: call monitor.attach(...)");
    expect(byTestId(box.el, "probe-error").textContent).toContain("attached model");
    typeAndRun("third");
    vi.advanceTimersByTime(REPLY_TIMEOUT_MS + 1);
    expect(byTestId(box.el, "probe-error").textContent).toContain("did not answer");
    typeAndRun("   ");
    expect(byTestId(box.el, "probe-error").textContent).toBe("type a text first");
  });

  it("says so when the reply's data is malformed", () => {
    typeAndRun("x");
    model.reply(model.lastSent().id, true, "probed", null, { tokens: ["a"], values: [], top: [] });
    expect(byTestId(box.el, "probe-error").textContent).toContain("values for 1 tokens");
  });

  it("offers the selected features to shade by and re-runs when the choice changes", () => {
    const select = byTestId<HTMLSelectElement>(box.el, "probe-feature");
    expect(Array.from(select.options).map((o) => o.value)).toEqual(["4", "7"]);
    typeAndRun("The cat sat");
    model.reply(model.lastSent().id, true, "ok", null, DATA);
    select.value = "4";
    select.dispatchEvent(new Event("change"));
    expect(model.lastSent()).toMatchObject({ type: "probe", feature: 4 });
    box.update(decodeSnapshot(snapshotMessage({ state: { selected_features: [] } })));
    expect(select.value).toBe("");
    typeAndRun("x");
    expect(model.lastSent()).toMatchObject({ type: "probe", feature: null });
  });
});

describe("probe and top-token wire data", () => {
  it("decodes probe data and rejects what is not", () => {
    expect(decodeProbeData(DATA).top[1]).toEqual([[4, 2.5], [9, 1.25]]);
    expect(() => decodeProbeData(null)).toThrow(ProtocolError);
    expect(() => decodeProbeData({ tokens: [1], values: [1], top: [[]] })).toThrow("strings");
  });

  it("adds a feature to the selection, at most 8, oldest out", () => {
    expect(addSelection([1, 2], 2)).toEqual([1, 2]);
    expect(addSelection([1, 2, 3, 4, 5, 6, 7, 8], 9)).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("decodes the table's top tokens per row and formats them", () => {
    const snap = decodeSnapshot(snapshotMessage({ topTokens: [[[" the", 3], ["by", 1]], null, null] }))!;
    expect(snap.tableTopTokens).toEqual([[{ text: " the", count: 3 }, { text: "by", count: 1 }], null, null]);
    expect(topTokensText(snap.tableTopTokens[0]!)).toBe("' the'×3 'by'×1");
    expect(decodeSnapshot(snapshotMessage())!.tableTopTokens).toEqual([null, null, null]); // old kernels
    expect(decodeTopTokens([["a", "3"]])).toBeNull();
  });
});
