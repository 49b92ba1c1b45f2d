/**
 * Test helpers (used by js/*.test.ts only; not part of the bundle): a fake anywidget model and
 * builders of snapshot messages with binary fields, as the kernel sends them.
 */

import type { AnyModel, RenderProps } from "@anywidget/types";
import type {
  ActivationRecordMessage,
  FeaturePanelMessage,
  MonitorState,
  Reply,
  TableColumn,
} from "./protocol";
import { TABLE_COLUMNS } from "./protocol";
import type { FeatmonModel } from "./widget";

type Handler = (...args: unknown[]) => void;

export class FakeModel {
  state: Record<string, unknown>;
  readonly handlers = new Map<string, Set<Handler>>();
  readonly sent: Record<string, unknown>[] = [];
  saves = 0;

  constructor(state: Record<string, unknown> = { snapshot: {} }) {
    this.state = { ...state };
  }

  get(key: string): unknown {
    return this.state[key];
  }

  set(key: string, value: unknown): void {
    this.state[key] = value;
    this.emit(`change:${key}`);
  }

  on(event: string, cb: Handler): void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(cb);
  }

  off(event?: string | null, cb?: Handler | null): void {
    if (!event) {
      this.handlers.clear();
      return;
    }
    if (!cb) this.handlers.delete(event);
    else this.handlers.get(event)?.delete(cb);
  }

  save_changes(): void {
    this.saves++;
  }

  send(content: unknown): void {
    this.sent.push(content as Record<string, unknown>);
  }

  emit(event: string, ...args: unknown[]): void {
    for (const cb of [...(this.handlers.get(event) ?? [])]) cb(...args);
  }

  listenerCount(event?: string): number {
    if (event) return this.handlers.get(event)?.size ?? 0;
    let n = 0;
    for (const set of this.handlers.values()) n += set.size;
    return n;
  }

  /** Answer the command with `id` as the kernel would. */
  reply(id: number, ok: boolean, message = "", error: string | null = null, data?: unknown): void {
    const msg: Reply = { type: "reply", id, ok, message, error, ...(data === undefined ? {} : { data }) };
    this.emit("msg:custom", msg, []);
  }

  lastSent(): Record<string, unknown> & { id: number } {
    const last = this.sent[this.sent.length - 1];
    if (!last) throw new Error("nothing was sent");
    return last as Record<string, unknown> & { id: number };
  }
}

export function renderProps(model: FakeModel, el: HTMLElement, signal?: AbortSignal): RenderProps<FeatmonModel> {
  return {
    model: model as unknown as AnyModel<FeatmonModel>,
    el,
    signal: signal ?? new AbortController().signal,
    host: {} as RenderProps["host"],
    experimental: {} as RenderProps["experimental"],
  } as unknown as RenderProps<FeatmonModel>;
}

export type Encoding = "int32" | "float32" | "float64";

/**
 * Little-endian bytes of `values` as a DataView starting at byte `offset` of a larger buffer
 * (an odd offset makes the view unaligned for every element type).
 */
export function binary(values: ArrayLike<number>, kind: Encoding, offset = 0): DataView {
  const size = kind === "float64" ? 8 : 4;
  const buffer = new ArrayBuffer(offset + values.length * size + 3);
  const view = new DataView(buffer, offset, values.length * size);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (kind === "int32") view.setInt32(i * size, v, true);
    else if (kind === "float32") view.setFloat32(i * size, v, true);
    else view.setFloat64(i * size, v, true);
  }
  return view;
}

/** The kernel's value edges: 2^-9, then 2^e and 1.5 * 2^e for e in -8..6, then 2^7. */
export const VALUE_EDGES = [
  2 ** -9,
  ...Array.from({ length: 30 }, (_, k) => 2 ** (-8 + Math.floor(k / 2)) * (k % 2 ? 1.5 : 1)),
  2 ** 7,
];
export const FREQUENCY_EDGES = Array.from({ length: 33 }, (_, k) => -8 + k / 4);

export function monitorState(overrides: Partial<MonitorState> = {}): MonitorState {
  return {
    enabled: true,
    sae_attached: true,
    hook_attached: true,
    hook_point: "blocks.6.hook_resid_post",
    sae_id: "gpt2-small-res-jb/blocks.6",
    d_sae: 1000,
    monitored_features: null,
    selected_features: [],
    history_size: 100,
    history_count: 10,
    top_k: 10,
    threshold: 0,
    throttle_ms: 100,
    total_tokens: 1000,
    forward_passes: 4,
    since: 1_700_000_000,
    active_since: 1_700_000_000,
    device: "cpu",
    errors: 0,
    last_error: null,
    ...overrides,
  };
}

export interface SnapshotSpec {
  /** The health / drift / watch part, as the kernel sends it. */
  oversight?: Record<string, unknown>;
  /** Per table row: the feature's label. */
  labels?: (string | null)[];
  /** Per table row: its top tokens as [text, count] pairs. */
  topTokens?: ([string, number][] | null)[];
  /** Per selected feature: its panel. */
  panels?: FeaturePanelMessage[];
  /** The search that chose the table's features. */
  table_search?: string;
  sequence?: number;
  timestamp?: number;
  state?: Partial<MonitorState>;
  metric?: string;
  features?: number[];
  columns?: Partial<Record<TableColumn, number[]>>;
  frequencyCounts?: number[];
  neverFired?: number;
  neverSeen?: number;
  /** feature -> 81 counts (bin 0 inactive, then 80 log bins) */
  values?: Record<number, number[]>;
  records?: ActivationRecordMessage[];
  /** byte offset of every binary view (odd -> unaligned) */
  offset?: number;
}

/** A snapshot message as `Snapshot.to_message()` produces it, binary fields as DataViews. */
export function snapshotMessage(spec: SnapshotSpec = {}): Record<string, unknown> {
  const offset = spec.offset ?? 0;
  const features = spec.features ?? [3, 1, 2];
  const columns: Record<string, DataView> = {};
  for (const [c, name] of TABLE_COLUMNS.entries()) {
    const given = spec.columns?.[name];
    const col = given ?? features.map((f, i) => (name === "count" ? 1000 : (features.length - i) * (c + 1) + f / 1000));
    columns[name] = binary(col, "float64", offset);
  }
  const valueEntries = Object.entries(spec.values ?? {});
  const state = monitorState({
    selected_features: valueEntries.map(([f]) => Number(f)),
    ...spec.state,
  });
  return {
    version: 1,
    sequence: spec.sequence ?? 1,
    timestamp: spec.timestamp ?? 1_700_000_100,
    state,
    table_metric: spec.metric ?? "mean",
    table_features: binary(features, "int32", offset),
    table_columns: columns,
    frequency_edges: binary(FREQUENCY_EDGES, "float32", offset),
    frequency_counts: binary(spec.frequencyCounts ?? FREQUENCY_EDGES.slice(1).map((_, i) => i), "int32", offset),
    never_fired: spec.neverFired ?? 7,
    never_seen: spec.neverSeen ?? 2,
    value_features: binary(valueEntries.map(([f]) => Number(f)), "int32", offset),
    value_edges: binary(VALUE_EDGES, "float32", offset),
    value_counts: binary(valueEntries.flatMap(([, counts]) => counts), "float64", offset),
    records: spec.records ?? [],
    ...(spec.labels ? { table_labels: spec.labels } : {}),
    ...(spec.topTokens ? { table_top_tokens: spec.topTokens } : {}),
    ...(spec.panels ? { feature_panels: spec.panels } : {}),
    ...(spec.table_search ? { table_search: spec.table_search } : {}),
    ...(spec.oversight ? { oversight: spec.oversight } : {}),
  };
}

/** One feature's value counts: the inactive bin, then the 31 log bins. */
export function valueCounts(fill: (bin: number) => number): number[] {
  return Array.from({ length: VALUE_EDGES.length }, (_, i) => fill(i));
}
