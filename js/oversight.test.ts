import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

const plotly = vi.hoisted(() => ({
  react: vi.fn((..._args: unknown[]) => Promise.resolve()),
  purge: vi.fn(),
  Plots: { resize: vi.fn() },
}));
vi.mock("plotly.js-basic-dist-min", () => ({ default: plotly }));

import { formatBytes } from "./healthStrip";
import { decodeOversight, decodeSnapshot } from "./protocol";
import { FakeModel, renderProps, snapshotMessage } from "./testing";
import { render } from "./widget";

const OVERSIGHT = {
  health: {
    l0_mean: 12.25, mse: 0.01, fvu: 0.183, cosine: 0.912, dead: 1203, ultra_rare: 45,
    rare_floor: 1e-5, sampled_forwards: 4, health_every: 8, reconstruction_tokens: 4096,
  },
  drift: {
    reference: "saved monitor runs/yesterday", test: "two-proportion z-test (pooled)",
    divergence: 0.0123, hot: [[42, 0.81, 5.1], [7, 0.5, 3.2]], cold: [[3, -1.2, -6.4]],
  },
  watched: [42, 99],
  watch_hits: 17,
};

let el: HTMLElement;
const cleanups: Array<() => void> = [];

beforeEach(() => {
  vi.useFakeTimers({ now: 1_700_000_100_000 });
  el = document.createElement("div");
  document.body.append(el);
});

afterEach(() => {
  for (const c of cleanups.splice(0)) c();
  el.remove();
  vi.useRealTimers();
});

function mount(message: Record<string, unknown>): HTMLElement {
  const model = new FakeModel({ snapshot: message });
  cleanups.push(render(renderProps(model, el)));
  vi.advanceTimersToNextFrame();
  return el;
}

const text = (root: ParentNode, id: string) =>
  root.querySelector(`[data-testid="${id}"]`)!.textContent;

describe("decodeOversight", () => {
  it("reads every part, and anything missing or malformed as absent", () => {
    const got = decodeOversight(OVERSIGHT);
    expect(got.health?.fvu).toBe(0.183);
    expect(got.drift?.hot).toEqual([[42, 0.81, 5.1], [7, 0.5, 3.2]]);
    expect(got.watched).toEqual([42, 99]);
    expect(got.watchHits).toBe(17);
    expect(decodeOversight(undefined)).toEqual({ health: null, drift: null, watched: [], watchHits: 0 });
    const bad = decodeOversight({ drift: { hot: [[1, 2], "x"] }, watched: ["a"], watch_hits: "3" });
    expect(bad.drift?.hot).toEqual([]);
    expect(bad.watched).toEqual([]);
    expect(bad.watchHits).toBe(0);
    // An old kernel's snapshot (no oversight) still decodes.
    expect(decodeSnapshot(snapshotMessage())!.oversight.health).toBeNull();
  });
});

describe("health strip, drift view and watch marks", () => {
  it("show the kernel's figures", () => {
    const root = mount(snapshotMessage({
      features: [42, 7],
      oversight: OVERSIGHT,
      state: { monitor_ms: 2.5, device_bytes: 24_000_000, records_dropped: 3 } as never,
    }));
    expect(text(root, "health-l0")).toBe("12.25");
    expect(text(root, "health-fvu")).toBe("0.183");
    expect(text(root, "health-cosine")).toBe("0.912");
    expect(text(root, "health-dead")).toBe("1,203");
    expect(text(root, "health-rare")).toBe("45");
    expect(text(root, "health-overhead")).toBe("2.5 ms/forward");
    expect(text(root, "health-memory")).toBe("24.0 MB");
    expect(text(root, "health-dropped")).toBe("3");
    expect(text(root, "health-watch-hits")).toBe("17");
    const drift = root.querySelector<HTMLElement>('[data-testid="drift"]')!;
    expect(drift.hidden).toBe(false);
    expect(text(root, "drift-summary")).toContain("saved monitor runs/yesterday");
    expect(Array.from(drift.querySelectorAll('[data-testid="drift-hot"] li'), (li) => li.textContent))
      .toEqual(["#42 +0.81 (z 5.1)", "#7 +0.5 (z 3.2)"]);
    expect(text(root, "drift-cold")).toBe("#3 -1.2 (z -6.4)");
    const rows = root.querySelectorAll('[data-testid="table-top"] tbody tr');
    expect(Array.from(rows, (r) => r.classList.contains("watched"))).toEqual([true, false]);
  });

  it("hide what is not there: no reference, no watches, nothing measured yet", () => {
    const root = mount(snapshotMessage({ oversight: { health: null, watched: [], watch_hits: 0 } }));
    expect(root.querySelector<HTMLElement>('[data-testid="drift"]')!.hidden).toBe(true);
    expect(text(root, "health-fvu")).toBe("—");
    expect(root.querySelector<HTMLElement>('[data-testid="health-watch-hits"]')!.parentElement!.hidden).toBe(true);
  });

  it("formats bytes in powers of 1000", () => {
    expect(formatBytes(999)).toBe("999 B");
    expect(formatBytes(24_000_000)).toBe("24.0 MB");
    expect(formatBytes(-1)).toBe("—");
  });
});
