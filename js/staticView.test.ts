import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

const plotly = vi.hoisted(() => ({
  react: vi.fn((..._args: unknown[]) => Promise.resolve()),
  purge: vi.fn(),
  Plots: { resize: vi.fn() },
}));
vi.mock("plotly.js-basic-dist-min", () => ({ default: plotly }));

import { STATIC_ERROR, decodeBinaryFields, renderStatic } from "./staticView";
import { snapshotMessage } from "./testing";

/** A snapshot message as the static page embeds it: binary fields as {"$base64": ...}. */
function asPageJson(value: unknown): unknown {
  if (value instanceof DataView) {
    const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    return { $base64: btoa(String.fromCharCode(...bytes)) };
  }
  if (Array.isArray(value)) return value.map(asPageJson);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, asPageJson(v)]));
}

let el: HTMLElement;
let cleanup: (() => void) | null = null;

beforeEach(() => {
  vi.useFakeTimers({ now: 1_700_000_100_000 });
  el = document.createElement("div");
  document.body.append(el);
});

afterEach(() => {
  cleanup?.();
  el.remove();
  vi.useRealTimers();
});

describe("decodeBinaryFields", () => {
  it("turns every {$base64} into bytes, at any depth, and leaves the rest", () => {
    const out = decodeBinaryFields({ a: { $base64: "AQID" }, b: [{ $base64: "" }, 4], c: "x" });
    expect(out).toEqual({ a: new Uint8Array([1, 2, 3]), b: [new Uint8Array([]), 4], c: "x" });
    // An object with more keys is data, not a binary field.
    expect(decodeBinaryFields({ $base64: "AQ", other: 1 })).toEqual({ $base64: "AQ", other: 1 });
  });
});

describe("renderStatic", () => {
  it("draws the saved snapshot: status, table rows and both charts", () => {
    const message = snapshotMessage({ features: [42, 7], state: { total_tokens: 123456 } });
    cleanup = renderStatic(el, JSON.parse(JSON.stringify(asPageJson(message))));
    vi.advanceTimersToNextFrame();
    vi.advanceTimersToNextFrame();
    const rows = el.querySelectorAll('[data-testid="table-top"] tbody tr');
    expect(Array.from(rows, (r) => r.getAttribute("data-feature"))).toEqual(["42", "7"]);
    expect(el.querySelector('[data-testid="status-tokens"]')!.textContent).toBe("123,456");
    const drawn = plotly.react.mock.calls.map(([div]) => (div as HTMLElement).dataset.testid);
    expect(drawn).toContain("chart-frequency");
    expect(el.classList.contains("featmon-static")).toBe(true);
  });

  it("answers a control at once with why it cannot act", async () => {
    cleanup = renderStatic(el, asPageJson(snapshotMessage()));
    vi.advanceTimersToNextFrame();
    el.querySelector<HTMLElement>('th[data-metric="max"] button')!.click();
    await Promise.resolve();
    await Promise.resolve();
    expect(el.querySelector('[data-testid="table-error"]')!.textContent).toBe(STATIC_ERROR);
  });
});
