/**
 * Parsing and validation of the configure form's text fields.
 *
 * Each parser returns `{ ok: true, value }` or `{ ok: false, error }` with a message meant for the
 * user. Only what the frontend can know is checked here (syntax, integers, signs, feature indices
 * against d_sae); the kernel validates the rest (e.g. upper limits) and its error is shown inline.
 */

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** Ranges are expanded in the browser: refuse lists larger than this before expanding. */
export const MAX_FEATURE_LIST = 65536;

const INT_RE = /^[+-]?\d+$/;
const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function fail<T>(error: string): Parsed<T> {
  return { ok: false, error };
}

/**
 * `all` (any case) or empty -> null (every feature); otherwise a comma-separated list of
 * non-negative integers and inclusive ranges `a-b`, e.g. `1,5,10-20`. Duplicates are dropped,
 * first occurrence kept. With `dSae`, indices must lie in 0..dSae-1.
 */
export function parseFeatureList(text: string, dSae?: number): Parsed<number[] | null> {
  const src = text.trim();
  if (src === "" || src.toLowerCase() === "all") return { ok: true, value: null };
  const bad = (why: string): Parsed<number[] | null> =>
    fail(`'${src}' is not a feature list: ${why}`);

  const out: number[] = [];
  const seen = new Set<number>();
  let total = 0;
  const parts = src.split(",").map((p) => p.trim());
  for (const part of parts) {
    if (part === "") return bad("it has an empty item");
    const range = /^(\S+?)\s*-\s*(\S+)$/.exec(part);
    let lo: number;
    let hi: number;
    if (range && /^\d+$/.test(range[1]!)) {
      const [, a, b] = range as unknown as [string, string, string];
      if (!/^\d+$/.test(b)) return bad(`'${b}' is not an integer`);
      lo = Number(a);
      hi = Number(b);
      if (lo > hi) return bad(`the range '${part}' is reversed`);
    } else if (/^\d+$/.test(part)) {
      lo = hi = Number(part);
    } else if (/^-\d+$/.test(part)) {
      return bad(`'${part}' is negative; feature indices start at 0`);
    } else {
      return bad(`'${part}' is not an integer`);
    }
    if (!Number.isSafeInteger(hi)) return bad(`'${part}' is too large`);
    if (dSae !== undefined && dSae > 0 && hi >= dSae) {
      return bad(`feature ${hi} is out of range; this SAE has features 0..${dSae - 1}`);
    }
    total += hi - lo + 1;
    if (total > MAX_FEATURE_LIST) {
      return bad(`it names more than ${MAX_FEATURE_LIST} features`);
    }
    for (let f = lo; f <= hi; f++) {
      if (!seen.has(f)) {
        seen.add(f);
        out.push(f);
      }
    }
  }
  return { ok: true, value: out };
}

/** Format a feature list for the features field: null -> `all`; runs become `a-b`. */
export function formatFeatureList(features: readonly number[] | null): string {
  if (features === null) return "all";
  const parts: string[] = [];
  let i = 0;
  while (i < features.length) {
    let j = i;
    while (j + 1 < features.length && features[j + 1] === features[j]! + 1) j++;
    const a = features[i]!;
    const b = features[j]!;
    if (j === i) parts.push(String(a));
    else if (j === i + 1) parts.push(`${a},${b}`);
    else parts.push(`${a}-${b}`);
    i = j + 1;
  }
  return parts.join(",");
}

/** A whole number >= `min`, written as digits (no decimals, no exponent). */
export function parseInteger(name: string, text: string, min: number): Parsed<number> {
  const src = text.trim();
  if (src === "") return fail(`${name} is empty; enter a whole number`);
  if (!INT_RE.test(src)) return fail(`${name} must be a whole number, got '${src}'`);
  const value = Number(src);
  if (!Number.isSafeInteger(value)) return fail(`${name} is too large: '${src}'`);
  if (value < min) return fail(`${name} must be at least ${min}, got ${value}`);
  return { ok: true, value };
}

/** A finite decimal number (optionally >= `min`). */
export function parseNumber(name: string, text: string, min?: number): Parsed<number> {
  const src = text.trim();
  if (src === "") return fail(`${name} is empty; enter a number`);
  if (!NUMBER_RE.test(src)) return fail(`${name} must be a number, got '${src}'`);
  const value = Number(src);
  if (!Number.isFinite(value)) return fail(`${name} must be a finite number, got '${src}'`);
  if (min !== undefined && value < min) return fail(`${name} must be at least ${min}, got ${value}`);
  return { ok: true, value };
}
