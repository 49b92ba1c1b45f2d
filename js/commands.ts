/**
 * Sending commands to the kernel and routing its replies back to whoever sent them.
 *
 * Replies are custom messages that reach every view of the model (and every browser tab on the
 * kernel), so each client only handles replies to ids it generated. Ids start at a random base so
 * that two tabs do not collide.
 */

import type { AnyModel } from "@anywidget/types";
import { type CommandBody, type Reply, isReply } from "./protocol";

export type ReplyHandler = (reply: Reply) => void;

let nextId = 1 + Math.floor(Math.random() * 2 ** 40);

/** A fresh command id (a safe integer, unique within this page). */
export function newCommandId(): number {
  return nextId++;
}

export class CommandClient {
  private readonly pending = new Map<number, ReplyHandler>();
  private readonly onMessage = (msg: unknown): void => {
    if (!isReply(msg)) return;
    const handler = this.pending.get(msg.id);
    if (!handler) return;
    this.pending.delete(msg.id);
    handler(msg);
  };
  private closed = false;

  constructor(private readonly model: AnyModel) {
    model.on("msg:custom", this.onMessage);
  }

  /** Send `body` with a new id; `onReply` runs once when the kernel answers it. */
  send(body: CommandBody, onReply: ReplyHandler): number {
    if (this.closed) return -1;
    const id = newCommandId();
    this.pending.set(id, onReply);
    this.model.send({ id, ...body });
    return id;
  }

  /** Commands sent and not yet answered. */
  get pendingCount(): number {
    return this.pending.size;
  }

  close(): void {
    this.closed = true;
    this.pending.clear();
    this.model.off("msg:custom", this.onMessage);
  }
}
