import { describe, expect, it } from "vitest";
import { MAX_FEATURE_LIST, formatFeatureList, parseFeatureList, parseInteger, parseNumber } from "./parse";

describe("parseFeatureList", () => {
  it("reads all/empty as every feature", () => {
    expect(parseFeatureList("all")).toEqual({ ok: true, value: null });
    expect(parseFeatureList(" ALL ")).toEqual({ ok: true, value: null });
    expect(parseFeatureList("")).toEqual({ ok: true, value: null });
    expect(parseFeatureList("   ")).toEqual({ ok: true, value: null });
  });

  it("reads lists and inclusive ranges, dropping duplicates", () => {
    expect(parseFeatureList("1,5,10-13")).toEqual({ ok: true, value: [1, 5, 10, 11, 12, 13] });
    expect(parseFeatureList(" 7 , 2 - 4 ,3, 0")).toEqual({ ok: true, value: [7, 2, 3, 4, 0] });
    expect(parseFeatureList("5-5")).toEqual({ ok: true, value: [5] });
  });

  it("rejects garbage with a message naming the bad item", () => {
    expect(parseFeatureList("1,x")).toEqual({
      ok: false,
      error: "'1,x' is not a feature list: 'x' is not an integer",
    });
    expect(parseFeatureList("1.5")).toMatchObject({ ok: false, error: expect.stringContaining("'1.5' is not an integer") });
    expect(parseFeatureList("3-x")).toMatchObject({ ok: false, error: expect.stringContaining("'x' is not an integer") });
    expect(parseFeatureList("1,,2")).toMatchObject({ ok: false, error: expect.stringContaining("empty item") });
    expect(parseFeatureList("9-3")).toMatchObject({ ok: false, error: expect.stringContaining("'9-3' is reversed") });
    expect(parseFeatureList("-3")).toMatchObject({ ok: false, error: expect.stringContaining("negative") });
    expect(parseFeatureList("1-2-3")).toMatchObject({ ok: false });
  });

  it("checks indices against d_sae and refuses huge ranges before expanding them", () => {
    expect(parseFeatureList("0-99", 100)).toMatchObject({ ok: true });
    expect(parseFeatureList("5,100", 100)).toEqual({
      ok: false,
      error: "'5,100' is not a feature list: feature 100 is out of range; this SAE has features 0..99",
    });
    expect(parseFeatureList(`0-${MAX_FEATURE_LIST}`)).toMatchObject({
      ok: false,
      error: expect.stringContaining(`more than ${MAX_FEATURE_LIST} features`),
    });
    expect(parseFeatureList("0-99999999999999999999")).toMatchObject({ ok: false, error: expect.stringContaining("too large") });
  });

  it("formats lists back into the same compact syntax", () => {
    expect(formatFeatureList(null)).toBe("all");
    expect(formatFeatureList([1, 5, 10, 11, 12, 13, 20, 21])).toBe("1,5,10-13,20,21");
    for (const text of ["1,5,10-13", "0-3,7,9-12"]) {
      const parsed = parseFeatureList(text);
      expect(parsed.ok && formatFeatureList(parsed.value)).toBe(text);
    }
  });
});

describe("numbers", () => {
  it("parses whole numbers with a lower bound", () => {
    expect(parseInteger("history size", "200", 1)).toEqual({ ok: true, value: 200 });
    expect(parseInteger("history size", " +7 ", 1)).toEqual({ ok: true, value: 7 });
    expect(parseInteger("history size", "2.5", 1)).toEqual({ ok: false, error: "history size must be a whole number, got '2.5'" });
    expect(parseInteger("history size", "1e3", 1)).toMatchObject({ ok: false });
    expect(parseInteger("top-k", "0", 1)).toEqual({ ok: false, error: "top-k must be at least 1, got 0" });
    expect(parseInteger("top-k", "", 1)).toMatchObject({ ok: false, error: expect.stringContaining("empty") });
  });

  it("parses finite decimals", () => {
    expect(parseNumber("threshold", "0.25")).toEqual({ ok: true, value: 0.25 });
    expect(parseNumber("threshold", "-1e-3")).toEqual({ ok: true, value: -0.001 });
    expect(parseNumber("threshold", ".5")).toEqual({ ok: true, value: 0.5 });
    expect(parseNumber("threshold", "abc")).toEqual({ ok: false, error: "threshold must be a number, got 'abc'" });
    expect(parseNumber("threshold", "Infinity")).toMatchObject({ ok: false });
    expect(parseNumber("threshold", "1e999")).toMatchObject({ ok: false, error: expect.stringContaining("finite") });
    expect(parseNumber("throttle", "-5", 0)).toEqual({ ok: false, error: "throttle must be at least 0, got -5" });
    expect(parseNumber("throttle", "0x10", 0)).toMatchObject({ ok: false });
  });
});
