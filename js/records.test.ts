import { describe, expect, it } from "vitest";

import type { ActivationRecordMessage } from "./protocol";
import { decodeSnapshot } from "./protocol";
import { RecentRecords } from "./records";
import { snapshotMessage } from "./testing";

function record(position: number, values: ActivationRecordMessage["values"] = []): ActivationRecordMessage {
  return { request_id: "r", row: 0, position, timestamp: 1_700_000_000, top: [[5, 1.5]], values };
}

function show(view: RecentRecords, records: ActivationRecordMessage[]): HTMLLIElement[] {
  view.update(decodeSnapshot(snapshotMessage({ records })));
  return Array.from(view.el.querySelectorAll("li"));
}

describe("recent records", () => {
  it("keeps the rows of records still in view and builds only new ones", () => {
    const view = new RecentRecords();
    const [b, a] = show(view, [record(2), record(1)]);
    const rows = show(view, [record(3), record(2), record(1)]);
    expect(rows.map((li) => li.dataset.record)).toEqual(["r/0/3", "r/0/2", "r/0/1"]);
    expect(rows[1]).toBe(b);
    expect(rows[2]).toBe(a);
  });

  it("rebuilds a record whose content changed and shows identical records twice", () => {
    const view = new RecentRecords();
    const [before] = show(view, [record(1)]);
    const [after] = show(view, [record(1, [[9, 0.25]])]); // a new feature selection
    expect(after).not.toBe(before);
    expect(after!.textContent).toContain("#9 0.25");
    expect(show(view, [record(4), record(4)])).toHaveLength(2);
  });

  it("shows each record's token text, or its id when no tokenizer is known", () => {
    const view = new RecentRecords();
    const [named, numbered, unknown] = show(view, [
      { ...record(3), token_id: 464, token: " the" },
      { ...record(2), token_id: 318 },
      record(1),
    ]);
    expect(named!.querySelector(".featmon-token")!.textContent).toBe(" the");
    expect(named!.querySelector(".featmon-token")!.getAttribute("title")).toBe("token 464");
    expect(numbered!.querySelector(".featmon-token")!.textContent).toBe("#318");
    expect(unknown!.querySelector(".featmon-token")).toBeNull();
  });
});
