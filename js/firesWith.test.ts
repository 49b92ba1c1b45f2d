import { describe, expect, it } from "vitest";

import type { AnyModel } from "@anywidget/types";
import { CommandClient } from "./commands";
import { FeaturePanels } from "./featurePanels";
import { firesWithView, withFeature } from "./firesWith";
import { type FeaturePanelMessage, decodeSnapshot } from "./protocol";
import { FakeModel, snapshotMessage } from "./testing";

const PANEL: FeaturePanelMessage = {
  feature: 12,
  label: "passive 'by'",
  count: 400,
  active_ratio: 0.05,
  mean_active: 1.5,
  max: 11.09,
  examples: [],
  fires_with: {
    tokens: 400,
    active: 20,
    features: [
      [7, 0.75, 18, 22, "agent nouns"],
      [3, 0.5, 12, 16, null],
      [12345, 0.05, 20, 400, "everywhere"],
    ],
  },
};

function mount(selected: number[], panels: FeaturePanelMessage[] = [PANEL]) {
  const model = new FakeModel();
  const controller = new AbortController();
  const commands = new CommandClient(model as unknown as AnyModel);
  const view = new FeaturePanels({ commands, signal: controller.signal });
  view.update(decodeSnapshot(snapshotMessage({ panels, state: { selected_features: selected } })));
  return { model, view, controller };
}

describe("fires with", () => {
  it("lists the co-firing features with labels, Jaccard and counts, in the kernel's order", () => {
    const { view } = mount([12]);
    const part = view.el.querySelector<HTMLElement>('[data-testid="fires-with"]')!;
    expect(part.textContent).toContain("over 400 tokens since selected, where it fired on 20");
    expect(part.textContent).toContain("ranked by Jaccard");
    const items = Array.from(part.querySelectorAll("li"));
    expect(items.map((li) => li.dataset.feature)).toEqual(["7", "3", "12345"]);
    expect(items[0]!.textContent).toBe("#7agent nouns J 0.750 · both 18 / 22");
    expect(items[1]!.querySelector(".featmon-label")).toBeNull();
    expect(items[2]!.textContent).toContain("both 20 / 400");
  });

  it("selects a clicked feature through the select command, keeping the others", () => {
    const { model, view } = mount([12, 5]);
    view.el.querySelector<HTMLElement>('[data-cofire="7"]')!.click();
    expect(model.lastSent()).toEqual({ id: expect.any(Number), type: "select", features: [12, 5, 7] });
    model.reply(model.lastSent().id, true, "showing 3 histogram(s)");
    expect(view.el.querySelector('[data-testid="panels-message"]')!.textContent).toBe("showing 3 histogram(s)");
  });

  it("shows the kernel's error, and sends nothing for a feature already selected", () => {
    const { model, view } = mount([12, 3]);
    expect(view.el.querySelector('[data-cofire="3"]')!.classList.contains("selected")).toBe(true);
    view.el.querySelector<HTMLElement>('[data-cofire="3"]')!.click();
    expect(model.sent).toEqual([]);
    view.el.querySelector<HTMLElement>('[data-cofire="12345"]')!.click();
    model.reply(model.lastSent().id, false, "", "selected must be in 0..99, got 12345");
    expect(view.el.querySelector('[data-testid="panels-error"]')!.textContent).toContain("12345");
  });

  it("stops listening when the view is cleaned up", () => {
    const { model, view, controller } = mount([12]);
    controller.abort();
    view.el.querySelector<HTMLElement>('[data-cofire="7"]')!.click();
    expect(model.sent).toEqual([]);
  });

  it("adds at most 8, the oldest dropped; an old kernel's panel has no list; bad rows are skipped", () => {
    expect(withFeature([1, 2, 3, 4, 5, 6, 7, 8], 9)).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
    expect(withFeature([1, 2], 2)).toEqual([1, 2]);
    expect(firesWithView(undefined, [])).toBe("");
    const { view } = mount([12], [{ ...PANEL, fires_with: undefined }]);
    expect(view.el.querySelector('[data-testid="fires-with"]')).toBeNull();
    const odd = firesWithView(
      { tokens: 0, active: 0, features: [[1, 0.5, 1, 2, null], ["x", 1] as never] },
      [],
    ) as HTMLElement;
    expect(odd.querySelectorAll("li")).toHaveLength(1);
    const none = firesWithView({ tokens: 5, active: 0, features: [] }, []) as HTMLElement;
    expect(none.textContent).toContain("Nothing has fired with it yet.");
  });
});
