/**
 * The widget without a kernel: draws one saved snapshot, for static HTML exports (a notebook
 * converted with nbconvert, or `monitor.to_html`). Binary fields arrive in the page as
 * `{"$base64": "..."}`; every command is answered at once with an error saying why it cannot
 * act, so the controls never wait for a kernel that is not there.
 */

import type { AnyModel, RenderProps } from "@anywidget/types";
import type { Reply } from "./protocol";
import { type FeatmonModel, render } from "./widget";

export const STATIC_ERROR = "this is a saved snapshot: the controls need a running kernel";

type Handler = (...args: unknown[]) => void;

function fromBase64(text: string): Uint8Array {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** `value` with every `{"$base64": text}` replaced by its bytes (any depth). */
export function decodeBinaryFields(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(decodeBinaryFields);
  if (value === null || typeof value !== "object") return value;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length === 1 && keys[0] === "$base64" && typeof record.$base64 === "string") {
    return fromBase64(record.$base64);
  }
  const out: Record<string, unknown> = {};
  for (const key of keys) out[key] = decodeBinaryFields(record[key]);
  return out;
}

/** The part of an anywidget model the view uses, holding one fixed snapshot. */
export class StaticModel {
  private readonly handlers = new Map<string, Set<Handler>>();

  constructor(private readonly snapshot: unknown) {}

  get(key: string): unknown {
    return key === "snapshot" ? this.snapshot : undefined;
  }

  set(): void {}

  save_changes(): void {}

  on(event: string, cb: Handler): void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(cb);
  }

  off(event?: string | null, cb?: Handler | null): void {
    if (!event) this.handlers.clear();
    else if (!cb) this.handlers.delete(event);
    else this.handlers.get(event)?.delete(cb);
  }

  /** A command: answered with `STATIC_ERROR` on the next microtask, as a kernel reply. */
  send(content: unknown): void {
    const id = (content as { id?: unknown } | null)?.id;
    if (typeof id !== "number") return;
    const reply: Reply = { type: "reply", id, ok: false, message: "", error: STATIC_ERROR };
    queueMicrotask(() => {
      for (const cb of [...(this.handlers.get("msg:custom") ?? [])]) cb(reply, []);
    });
  }
}

/** Draw the saved `snapshot` (binary fields as `{"$base64": ...}`) into `el`; returns the
 * view's cleanup. */
export function renderStatic(el: HTMLElement, snapshot: unknown): () => void {
  const model = new StaticModel(decodeBinaryFields(snapshot));
  const props = {
    model: model as unknown as AnyModel<FeatmonModel>,
    el,
    signal: new AbortController().signal,
  } as unknown as RenderProps<FeatmonModel>;
  el.classList.add("featmon-static");
  return render(props);
}
