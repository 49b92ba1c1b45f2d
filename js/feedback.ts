/** Inline feedback next to a control: pending, brief success, or the kernel's error text. */

import { h, setText } from "./dom";
import type { Reply } from "./protocol";

export const SUCCESS_MS = 3000;

export class Feedback {
  readonly el: HTMLElement;
  readonly message: HTMLElement;
  readonly error: HTMLElement;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(testid: string) {
    this.message = h("span", {
      class: "featmon-message",
      "data-testid": `${testid}-message`,
      role: "status",
      "aria-live": "polite",
    });
    this.error = h("span", {
      class: "featmon-error",
      "data-testid": `${testid}-error`,
      role: "alert",
    });
    this.el = h("span", { class: "featmon-feedback" }, this.message, this.error);
  }

  pending(text = "waiting for kernel…"): void {
    this.clearTimer();
    setText(this.error, "");
    setText(this.message, text);
    this.message.classList.add("pending");
  }

  success(text: string): void {
    this.clearTimer();
    setText(this.error, "");
    setText(this.message, text);
    this.message.classList.remove("pending");
    this.timer = setTimeout(() => {
      this.timer = undefined;
      setText(this.message, "");
    }, SUCCESS_MS);
  }

  fail(text: string): void {
    this.clearTimer();
    setText(this.message, "");
    this.message.classList.remove("pending");
    setText(this.error, text);
  }

  /** Show a kernel reply: its message on success, its error text otherwise. */
  reply(reply: Reply, fallback = "done"): void {
    if (reply.ok) this.success(reply.message || fallback);
    else this.fail(reply.error || reply.message || "the kernel rejected the command");
  }

  destroy(): void {
    this.clearTimer();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
