import { describe, expect, it } from "vitest";

import { activationBands, binOf } from "./bands";

const EDGES = [1, 2, 4, 8, 16, 32]; // bins 1..5: <2, [2,4), [4,8), [8,16), >=16
const ex = (value: number | null, tag = "") => ({ value, tag });

describe("activationBands", () => {
  it("bins as the kernel does: the first and last bins take what lies beyond the edges", () => {
    expect([0.1, 1, 1.99, 2, 3.9, 4, 15.9, 16, 1e9].map((v) => binOf(EDGES, v))).toEqual([
      1, 1, 1, 2, 2, 3, 4, 5, 5,
    ]);
  });

  it("gives each band the exact sum of its bins' counts and its share of active counts", () => {
    const counts = [100, 1, 2, 3, 4, 10]; // bin 0 (inactive) is not a share of activations
    const bands = activationBands(EDGES, counts, [], 10);
    expect(bands.map((b) => [b.firstBin, b.lastBin, b.count])).toEqual([
      [5, 5, 10],
      [4, 4, 4],
      [3, 3, 3],
      [2, 2, 2],
      [1, 1, 1],
    ]);
    expect(bands.map((b) => b.share)).toEqual([0.5, 0.2, 0.15, 0.1, 0.05]);
    expect(bands.reduce((s, b) => s + b.count, 0)).toBe(20);
    expect(bands[0]?.high).toBe(Infinity);
    expect(bands[4]?.low).toBe(-Infinity);
    expect([bands[1]?.low, bands[1]?.high]).toEqual([8, 16]);
  });

  it("groups whole bins into at most maxBands bands, highest first", () => {
    const counts = [0, 1, 2, 3, 4, 10];
    const bands = activationBands(EDGES, counts, [], 2);
    expect(bands.map((b) => [b.firstBin, b.lastBin, b.count])).toEqual([
      [3, 5, 17],
      [1, 2, 3],
    ]);
    expect(bands[0]?.low).toBe(4);
    expect(bands[1]?.high).toBe(4);
  });

  it("puts top and sampled examples in the band of their value; samples reach low bands", () => {
    const counts = [0, 40, 30, 20, 9, 1];
    const top = [ex(20, "top"), ex(12, "top")];
    const samples = [ex(1.5, "sample"), ex(5, "sample")];
    const bands = activationBands(EDGES, counts, [...top, ...samples], 10);
    const where = Object.fromEntries(
      bands.flatMap((b) => b.examples.map((e) => [`${e.tag}${e.value}`, b.firstBin])),
    );
    expect(where).toEqual({ top20: 5, top12: 4, sample5: 3, "sample1.5": 1 });
  });

  it("keeps a band with an example but no count (recorded before the feature was selected)", () => {
    const bands = activationBands(EDGES, [0, 0, 0, 5, 0, 0], [ex(20)], 10);
    expect(bands.map((b) => [b.firstBin, b.count, b.examples.length])).toEqual([
      [5, 0, 1],
      [3, 5, 0],
    ]);
    expect(bands.map((b) => b.share)).toEqual([0, 1]);
  });

  it("has no share without counts, and nothing without counts or examples", () => {
    expect(activationBands(EDGES, [3, 0, 0, 0, 0, 0], [], 10)).toEqual([]);
    const [band] = activationBands(EDGES, [0, 0, 0, 0, 0, 0], [ex(3), ex(null)], 10);
    expect(band?.share).toBeNull();
    expect(band?.examples).toEqual([ex(3)]);
    expect(activationBands(EDGES, [0, 1], [], 10)).toEqual([]); // counts of another length
  });
});
