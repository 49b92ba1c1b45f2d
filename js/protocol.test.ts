import { describe, expect, it } from "vitest";
import {
  ProtocolError,
  decodeFloat32,
  decodeFloat64,
  decodeInt32,
  decodeSnapshot,
  isEmptySnapshot,
  isReply,
} from "./protocol";
import { VALUE_EDGES, binary, valueCounts, snapshotMessage } from "./testing";

describe("binary decoding", () => {
  it.each([0, 1, 3, 5])("decodes little-endian arrays from DataViews at byte offset %i", (offset) => {
    expect(Array.from(decodeInt32(binary([1, -2, 2 ** 31 - 1, -(2 ** 31)], "int32", offset)))).toEqual([
      1,
      -2,
      2 ** 31 - 1,
      -(2 ** 31),
    ]);
    expect(Array.from(decodeFloat32(binary([0.5, -8, 4096], "float32", offset)))).toEqual([0.5, -8, 4096]);
    const f64 = decodeFloat64(binary([Math.PI, NaN, 2 ** 53, -0.1], "float64", offset));
    expect(f64[0]).toBe(Math.PI);
    expect(f64[1]).toBeNaN();
    expect(f64[2]).toBe(2 ** 53);
    expect(f64[3]).toBe(-0.1);
  });

  it("accepts ArrayBuffers, typed arrays and plain arrays", () => {
    const view = binary([1.5, 2.5], "float64", 0);
    expect(Array.from(decodeFloat64(view.buffer.slice(0, 16)))).toEqual([1.5, 2.5]);
    expect(Array.from(decodeFloat64(new Float64Array([1.5, 2.5])))).toEqual([1.5, 2.5]);
    // A Uint8Array window at an odd offset into a bigger buffer.
    const odd = binary([7, 8], "int32", 3);
    expect(Array.from(decodeInt32(new Uint8Array(odd.buffer, 3, 8)))).toEqual([7, 8]);
    expect(Array.from(decodeFloat64([1, null, 3]))).toEqual([1, NaN, 3]);
  });

  it("copies the bytes: later writes to the source do not change the result", () => {
    const view = binary([1, 2, 3], "int32", 1);
    const decoded = decodeInt32(view);
    view.setInt32(0, 99, true);
    expect(Array.from(decoded)).toEqual([1, 2, 3]);
    expect(decoded.buffer).not.toBe(view.buffer);
  });

  it("rejects byte lengths that are not a whole number of elements, and non-binary values", () => {
    expect(() => decodeFloat64(new Uint8Array(12), "x")).toThrow(/12 bytes, not a multiple of 8/);
    expect(() => decodeInt32("abc", "x")).toThrow(ProtocolError);
    expect(() => decodeInt32(null, "table_features")).toThrow(/table_features is not binary data/);
  });
});

describe("decodeSnapshot", () => {
  it("returns null before the first snapshot", () => {
    expect(decodeSnapshot({})).toBeNull();
    expect(decodeSnapshot(undefined)).toBeNull();
    expect(isEmptySnapshot({})).toBe(true);
  });

  it("decodes every field of a snapshot with unaligned binary buffers", () => {
    const inactive = valueCounts((i) => (i === 0 ? 900 : i === 40 ? 100 : 0));
    const other = valueCounts((i) => i);
    const msg = snapshotMessage({
      offset: 1,
      sequence: 42,
      metric: "max",
      features: [9, 4, 7],
      columns: { mean: [0.5, NaN, -1.25], count: [10, 0, 2 ** 40] },
      frequencyCounts: Array.from({ length: 32 }, (_, i) => 2 * i),
      neverFired: 11,
      neverSeen: 3,
      values: { 5: inactive, 12: other },
      records: [{ request_id: "r1", row: 0, position: 3, timestamp: 1, top: [[5, 1.5]], values: [] }],
      state: { total_tokens: 1234 },
    });
    const s = decodeSnapshot(msg)!;
    expect(s.sequence).toBe(42);
    expect(s.tableMetric).toBe("max");
    expect(Array.from(s.tableFeatures)).toEqual([9, 4, 7]);
    expect(s.tableColumns.mean[0]).toBe(0.5);
    expect(s.tableColumns.mean[1]).toBeNaN();
    expect(s.tableColumns.mean[2]).toBe(-1.25);
    expect(s.tableColumns.count[2]).toBe(2 ** 40);
    expect(s.frequencyEdges.length).toBe(33);
    expect(s.frequencyEdges[0]).toBe(-8);
    expect(s.frequencyEdges[32]).toBe(0);
    expect(Array.from(s.frequencyCounts)).toEqual(Array.from({ length: 32 }, (_, i) => 2 * i));
    expect(s.neverFired).toBe(11);
    expect(s.neverSeen).toBe(3);
    expect(s.valueEdges.length).toBe(32);
    expect(s.valueEdges[0]).toBe(2 ** -9);
    expect(s.valueEdges[31]).toBe(2 ** 7);
    expect(Array.from(s.valueEdges)).toEqual(VALUE_EDGES.map(Math.fround));
    expect(s.values.map((v) => v.feature)).toEqual([5, 12]);
    expect(Array.from(s.values[0]!.counts)).toEqual(inactive);
    expect(Array.from(s.values[1]!.counts)).toEqual(other);
    expect(s.state.total_tokens).toBe(1234);
    expect(s.records[0]!.top).toEqual([[5, 1.5]]);
  });

  it("caches per message object so several views decode once", () => {
    const msg = snapshotMessage();
    expect(decodeSnapshot(msg)).toBe(decodeSnapshot(msg));
    expect(decodeSnapshot(snapshotMessage())).not.toBe(decodeSnapshot(msg));
  });

  it("rejects an unknown version and inconsistent lengths", () => {
    expect(() => decodeSnapshot({ ...snapshotMessage(), version: 2 })).toThrow(/version 2 is not supported/);
    const bad = snapshotMessage({ values: { 1: valueCounts(() => 1) } });
    bad.value_counts = binary([1, 2, 3], "float64");
    expect(() => decodeSnapshot(bad)).toThrow(/value_counts has 3 values; expected 1 features x 32 bins/);
    const short = snapshotMessage({ features: [1, 2] });
    (short.table_columns as Record<string, unknown>).std = binary([1], "float64");
    expect(() => decodeSnapshot(short)).toThrow(/table column std has 1 rows/);
  });
});

describe("isReply", () => {
  it("recognises reply messages only", () => {
    expect(isReply({ type: "reply", id: 3, ok: true, message: "", error: null })).toBe(true);
    expect(isReply({ type: "other", id: 3 })).toBe(false);
    expect(isReply({ type: "reply" })).toBe(false);
    expect(isReply(null)).toBe(false);
  });
});
