/**
 * Sending commands to the kernel and routing its replies back to whoever sent them.
 *
 * Replies are custom messages that reach every view of the model (and every browser tab on the
 * kernel), so each client only handles replies to ids it generated. Ids start at a random base so
 * that two tabs do not collide. A command the kernel does not answer within the timeout gets an
 * error reply from here, so no control waits forever (a reply arriving later is ignored; the next
 * snapshot shows what the kernel did).
 */

import type { AnyModel } from "@anywidget/types";
import { type CommandBody, type Reply, isReply } from "./protocol";

export type ReplyHandler = (reply: Reply) => void;

/** How long a command waits for the kernel's reply. The kernel answers commands between cells,
 * so a long-running cell delays the reply. */
export const REPLY_TIMEOUT_MS = 20_000;

let nextId = 1 + Math.floor(Math.random() * 2 ** 40);

/** A fresh command id (a safe integer, unique within this page). */
export function newCommandId(): number {
  return nextId++;
}

interface Pending {
  handler: ReplyHandler;
  timer: ReturnType<typeof setTimeout>;
}

export class CommandClient {
  private readonly pending = new Map<number, Pending>();
  private readonly onMessage = (msg: unknown): void => {
    if (isReply(msg)) this.settle(msg);
  };
  private closed = false;

  constructor(
    private readonly model: AnyModel,
    private readonly timeoutMs = REPLY_TIMEOUT_MS,
  ) {
    model.on("msg:custom", this.onMessage);
  }

  /** Send `body` with a new id; `onReply` runs exactly once: with the kernel's reply, or with an
   * error reply when the kernel did not answer within the timeout. */
  send(body: CommandBody, onReply: ReplyHandler): number {
    if (this.closed) return -1;
    const id = newCommandId();
    const timer = setTimeout(() => {
      const seconds = Math.round(this.timeoutMs / 1000);
      this.settle({
        type: "reply",
        id,
        ok: false,
        message: "",
        error: `the kernel did not answer within ${seconds} s (is a cell still running?)`,
      });
    }, this.timeoutMs);
    this.pending.set(id, { handler: onReply, timer });
    this.model.send({ id, ...body });
    return id;
  }

  close(): void {
    this.closed = true;
    for (const { timer } of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
    this.model.off("msg:custom", this.onMessage);
  }

  private settle(reply: Reply): void {
    const entry = this.pending.get(reply.id);
    if (!entry) return;
    this.pending.delete(reply.id);
    clearTimeout(entry.timer);
    entry.handler(reply);
  }
}
