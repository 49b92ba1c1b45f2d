import { describe, expect, it } from "vitest";
import { formatAge, formatCount, formatEdge, formatFloat, formatInt, formatPercent, formatRate, fullPrecision } from "./format";

describe("format", () => {
  it("formats table numbers compactly and NaN as a dash", () => {
    expect(formatFloat(NaN)).toBe("—");
    expect(formatFloat(0)).toBe("0");
    expect(formatFloat(1.23456)).toBe("1.235");
    expect(formatFloat(12.5)).toBe("12.5");
    expect(formatFloat(0.000012345)).toBe("1.23e-5");
    expect(formatFloat(123456789)).toBe("1.23e8");
    expect(formatFloat(-2)).toBe("-2");
    expect(formatInt(1234567)).toBe("1,234,567");
    expect(formatInt(NaN)).toBe("—");
    expect(formatPercent(0.5)).toBe("50%");
    expect(formatPercent(0.0001234)).toBe("0.0123%");
    expect(formatPercent(NaN)).toBe("—");
    expect(fullPrecision(0.1 + 0.2)).toBe("0.30000000000000004");
  });

  it("formats ages, rates and edges", () => {
    expect(formatAge(3.7)).toBe("3 s");
    expect(formatAge(125)).toBe("2 min 5 s");
    expect(formatAge(3720)).toBe("1 h 2 min");
    expect(formatRate(NaN)).toBe("—");
    expect(formatRate(12.345)).toBe("12.3");
    expect(formatRate(4567)).toBe("4,567");
    expect(formatRate(45678)).toBe("45.7k");
    expect(formatRate(2_500_000)).toBe("2.5M");
    expect(formatEdge(2 ** -8)).toBe("0.0039");
    expect(formatEdge(1)).toBe("1");
    expect(formatEdge(4096)).toBe("4096");
  });

  it("formats counts compactly for narrow table columns", () => {
    expect(formatCount(NaN)).toBe("—");
    expect(formatCount(12345)).toBe("12,345");
    expect(formatCount(123456)).toBe("123k");
    expect(formatCount(1_234_567)).toBe("1.23M");
    expect(formatCount(2.5e9)).toBe("2.5G");
  });
});
