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

  get pending(): boolean {
    return this.handle !== null;
  }

  cancel(): void {
    if (this.handle !== null) cancelFrame(this.handle);
    this.handle = null;
  }
}
