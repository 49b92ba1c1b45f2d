/** Tokens per second from successive snapshots (kernel timestamps), over a sliding window. */

export const RATE_WINDOW_S = 5;

interface Sample {
  t: number;
  tokens: number;
}

export class RateMeter {
  private samples: Sample[] = [];

  constructor(private readonly windowS = RATE_WINDOW_S) {}

  /** Record `tokens` seen at kernel time `t` (unix s). A drop in tokens (reset) restarts. */
  add(t: number, tokens: number): void {
    const last = this.samples[this.samples.length - 1];
    if (last && (tokens < last.tokens || t < last.t)) this.samples = [];
    if (last && t === last.t) this.samples.pop();
    this.samples.push({ t, tokens });
    // Keep one sample at or before the window start so the rate spans the whole window.
    while (this.samples.length > 2 && this.samples[1]!.t <= t - this.windowS) this.samples.shift();
  }

  /** Tokens/s over the window, or NaN with fewer than two samples. */
  rate(): number {
    const n = this.samples.length;
    if (n < 2) return NaN;
    const a = this.samples[0]!;
    const b = this.samples[n - 1]!;
    const dt = b.t - a.t;
    return dt > 0 ? (b.tokens - a.tokens) / dt : NaN;
  }

  reset(): void {
    this.samples = [];
  }
}
