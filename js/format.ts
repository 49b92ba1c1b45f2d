/** Number and time formatting shared by the components. Deterministic (no locale lookups). */

export const DASH = "—";

/** Thousands separators: 1234567 -> "1,234,567". */
export function formatInt(value: number): string {
  if (!Number.isFinite(value)) return DASH;
  const sign = value < 0 ? "-" : "";
  const digits = String(Math.round(Math.abs(value)));
  return sign + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Compact count for narrow columns: 12,345 stays; 1234567 -> "1.23M", 2.5e9 -> "2.5G". */
export function formatCount(value: number): string {
  if (!Number.isFinite(value)) return DASH;
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${trimZeros((value / 1e9).toPrecision(3))}G`;
  if (abs >= 1e6) return `${trimZeros((value / 1e6).toPrecision(3))}M`;
  if (abs >= 1e5) return `${trimZeros((value / 1e3).toPrecision(3))}k`;
  return formatInt(value);
}

/** Compact float: 4 significant digits, exponent form for very small or large magnitudes. */
export function formatFloat(value: number): string {
  if (!Number.isFinite(value)) return Number.isNaN(value) ? DASH : value > 0 ? "∞" : "-∞";
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-3) {
    return value.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
  }
  return trimZeros(value.toPrecision(4));
}

function trimZeros(text: string): string {
  return text.includes(".") && !text.includes("e") ? text.replace(/\.?0+$/, "") : text;
}

/** A ratio 0..1 as a percentage with 3 significant digits. */
export function formatPercent(ratio: number): string {
  if (!Number.isFinite(ratio)) return DASH;
  if (ratio === 0) return "0%";
  const pct = ratio * 100;
  if (pct < 0.001) return `${pct.toExponential(1).replace("e+", "e")}%`;
  return `${trimZeros(pct.toPrecision(3))}%`;
}

/** Full precision for tooltips: the shortest string that round-trips the float64. */
export function fullPrecision(value: number): string {
  return Number.isNaN(value) ? "undefined (no data)" : String(value);
}

/** "3 s", "2 min 5 s", "1 h 4 min". */
export function formatAge(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

/** Tokens per second, compact. */
export function formatRate(rate: number): string {
  if (!Number.isFinite(rate)) return DASH;
  if (rate >= 1e6) return `${trimZeros((rate / 1e6).toPrecision(3))}M`;
  if (rate >= 1e4) return `${trimZeros((rate / 1e3).toPrecision(3))}k`;
  if (rate >= 100) return formatInt(rate);
  return trimZeros(rate.toPrecision(3));
}

/** Local wall-clock time of a unix timestamp (seconds), hh:mm:ss. */
export function formatClock(unixSeconds: number): string {
  if (!Number.isFinite(unixSeconds) || unixSeconds <= 0) return DASH;
  const d = new Date(unixSeconds * 1000);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Axis label for an activation value edge: 0.0039, 0.25, 1, 16, 4096. */
export function formatEdge(value: number): string {
  if (!Number.isFinite(value)) return DASH;
  if (value >= 1) return trimZeros(value.toPrecision(4));
  return trimZeros(value.toPrecision(2));
}
