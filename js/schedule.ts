/** Coalesce many requests into one call per animation frame. */

type FrameHandle = number | ReturnType<typeof setTimeout>;

function requestFrame(cb: () => void): FrameHandle {
  if (typeof requestAnimationFrame === "function") return requestAnimationFrame(() => cb());
  return setTimeout(cb, 16);
}

function cancelFrame(handle: FrameHandle): void {
  if (typeof cancelAnimationFrame === "function" && typeof handle === "number") {
    cancelAnimationFrame(handle);
  } else {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  }
}

export class FrameScheduler {
  private handle: FrameHandle | null = null;

  constructor(private readonly callback: () => void) {}

  /** Run the callback on the next frame; further requests before then are merged into it. */
  request(): void {
    if (this.handle !== null) return;
    this.handle = requestFrame(() => {
      this.handle = null;
      this.callback();
    });
  }

  cancel(): void {
    if (this.handle !== null) cancelFrame(this.handle);
    this.handle = null;
  }
}

/** Charts redraw at most this often (ms); the latest data is always drawn by a trailing redraw. */
export const CHART_INTERVAL_MS = 250;

/**
 * Rate-limited frame callback: `request()` runs the callback on an animation frame, but not
 * sooner than `intervalMs` after the previous run started. Requests while one is pending merge
 * into it (the callback reads the latest state when it runs), so the last request is always
 * followed by a run: a trailing redraw.
 */
export class ThrottledFrame {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private frame: FrameHandle | null = null;
  private last = -Infinity;
  private running = false;
  private again = false;

  constructor(
    private readonly callback: () => void,
    private readonly intervalMs = CHART_INTERVAL_MS,
  ) {}

  request(): void {
    if (this.running) {
      this.again = true; // a request made by the callback itself: run once more afterwards
      return;
    }
    if (this.timer !== null || this.frame !== null) return;
    const wait = this.last + this.intervalMs - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.frame = requestFrame(() => this.run());
      }, wait);
    } else {
      this.frame = requestFrame(() => this.run());
    }
  }

  private run(): void {
    this.frame = null;
    this.last = Date.now();
    this.running = true;
    this.again = false;
    try {
      this.callback();
    } finally {
      this.running = false;
    }
    if (this.again) this.request();
  }

  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.frame !== null) cancelFrame(this.frame);
    this.timer = null;
    this.frame = null;
    this.again = false;
  }
}
