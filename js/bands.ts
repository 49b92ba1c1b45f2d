/**
 * Activation-interval bands of a feature's examples (pure: no DOM).
 *
 * The feature's value histogram (the snapshot's `valueEdges` and the feature's counts: bin 0
 * inactive, bin i >= 1 the values in [edges[i-1], edges[i]), the first and last log bins also
 * taking the values below and above the edges) gives each band its share of the feature's
 * activations exactly: a band is a union of whole bins, so its count is a sum of bin counts.
 * The bins from the lowest to the highest that holds a count or an example are split into at
 * most `maxBands` runs of consecutive bins (as equal in bins as they divide); each example (top
 * or sampled) goes to the band of its bin, found as the kernel bins it.
 */

/** What banding reads of an example. */
export interface Banded {
  value: number | null;
}

export interface Band<T extends Banded> {
  /** First and last histogram bins (1-based, inclusive). */
  firstBin: number;
  lastBin: number;
  /** Value range: [low, high); low is -Infinity for the first log bin, high Infinity for the last. */
  low: number;
  high: number;
  /** Activations counted in the band's bins, and their share of all active counts (null: none counted). */
  count: number;
  share: number | null;
  examples: T[];
}

/** The histogram bin (1 .. edges.length - 1) of an active `value`, as the kernel bins it. */
export function binOf(edges: ArrayLike<number>, value: number): number {
  const last = edges.length - 1;
  let bin = 1;
  while (bin < last && value >= (edges[bin] ?? Infinity)) bin++;
  return bin;
}

/** The bands of `examples` against the histogram `edges` / `counts` (counts[0]: inactive),
 * highest band first; bands with neither count nor example are left out. */
export function activationBands<T extends Banded>(
  edges: ArrayLike<number>,
  counts: ArrayLike<number>,
  examples: readonly T[],
  maxBands = 10,
): Band<T>[] {
  const bins = edges.length - 1;
  if (bins < 1 || counts.length !== edges.length || !(maxBands >= 1)) return [];
  const placed = examples
    .filter((e) => e.value !== null && Number.isFinite(e.value))
    .map((e) => ({ example: e, bin: binOf(edges, e.value as number) }));
  let lo = bins + 1;
  let hi = 0;
  let active = 0;
  for (let i = 1; i <= bins; i++) {
    const c = counts[i] ?? 0;
    active += c;
    if (c > 0) {
      lo = Math.min(lo, i);
      hi = Math.max(hi, i);
    }
  }
  for (const { bin } of placed) {
    lo = Math.min(lo, bin);
    hi = Math.max(hi, bin);
  }
  if (hi === 0) return [];
  const span = hi - lo + 1;
  const n = Math.min(maxBands, span);
  const bands: Band<T>[] = [];
  for (let b = 0; b < n; b++) {
    const firstBin = lo + Math.floor((b * span) / n);
    const lastBin = lo + Math.floor(((b + 1) * span) / n) - 1;
    let count = 0;
    for (let i = firstBin; i <= lastBin; i++) count += counts[i] ?? 0;
    const inBand = placed.filter((p) => p.bin >= firstBin && p.bin <= lastBin).map((p) => p.example);
    if (count === 0 && inBand.length === 0) continue;
    bands.push({
      firstBin,
      lastBin,
      low: firstBin === 1 ? -Infinity : (edges[firstBin - 1] ?? -Infinity),
      high: lastBin === bins ? Infinity : (edges[lastBin] ?? Infinity),
      count,
      share: active > 0 ? count / active : null,
      examples: inBand,
    });
  }
  return bands.reverse();
}
