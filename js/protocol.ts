/**
 * The wire protocol between the kernel and this frontend.
 *
 * `SnapshotMessage` mirrors `Snapshot.to_message()` in featmon_widget/schemas.py: JSON values plus
 * little-endian binary buffers. Binary fields reach the model state as `DataView`s (anywidget /
 * ipywidgets), but ArrayBuffers, typed arrays and plain number arrays are accepted too. Decoding
 * always COPIES the bytes into fresh typed arrays: buffer offsets may be unaligned and the views
 * may be reused by the widget manager.
 */

import {
  COMMANDS,
  FORM_SETTINGS,
  MAX_SELECTED,
  METRICS,
  PROBE_TEXT_CHARS,
  SNAPSHOT_VERSION,
  TABLE_COLUMNS,
  TABLE_ROWS_RANGE,
} from "./protocolConstants";

// The names and limits shared with the kernel are generated from the Python package.
export {
  COMMANDS,
  FORM_SETTINGS,
  MAX_SELECTED,
  METRICS,
  PROBE_TEXT_CHARS,
  SNAPSHOT_VERSION,
  TABLE_COLUMNS,
  TABLE_ROWS_RANGE,
};

export type Metric = (typeof METRICS)[number];
export type TableColumn = (typeof TABLE_COLUMNS)[number];
/** A setting the configure form may change. */
export type FormSetting = (typeof FORM_SETTINGS)[number];
export type CommandType = (typeof COMMANDS)[number];

/** Binary payload as it may arrive in the model state. */
export type Binary = DataView | ArrayBuffer | ArrayBufferView | readonly number[];

/** `MonitorState.to_dict()`. */
export interface MonitorState {
  enabled: boolean;
  sae_attached: boolean;
  hook_attached: boolean;
  hook_point: string | null;
  sae_id: string | null;
  d_sae: number;
  monitored_features: number[] | null;
  selected_features: number[];
  history_size: number;
  history_count: number;
  top_k: number;
  threshold: number;
  throttle_ms: number;
  total_tokens: number;
  forward_passes: number;
  since: number;
  active_since: number;
  device: string | null;
  errors: number;
  last_error: string | null;
  /** Sparse feature indices outside 0..d_sae-1 that were ignored (absent from old kernels). */
  dropped_indices?: number;
  /** History records overwritten by newer ones. */
  records_dropped?: number;
  /** Mean milliseconds monitoring took per forward (null before the first). */
  monitor_ms?: number | null;
  /** Device bytes the monitor holds. */
  device_bytes?: number;
}

/** The health strip's figures (see the Python `HealthResponse`); null: not measured yet. */
export interface HealthFields {
  l0_mean: number | null;
  mse: number | null;
  fvu: number | null;
  cosine: number | null;
  dead: number;
  ultra_rare: number;
  rare_floor: number;
  sampled_forwards: number;
  health_every: number;
  reconstruction_tokens: number;
}

/** `[feature, log10 ratio, z]` of one drifting feature. */
export type DriftRow = [number, number, number];

export interface DriftFields {
  reference: string;
  test: string;
  divergence: number | null;
  hot: DriftRow[];
  cold: DriftRow[];
}

/** Health, drift against a reference (null without one), watched features and their hits. */
export interface Oversight {
  health: HealthFields | null;
  drift: DriftFields | null;
  watched: number[];
  watchHits: number;
}

function isNumberList(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((v) => typeof v === "number");
}

function driftRows(value: unknown): DriftRow[] {
  if (!Array.isArray(value)) return [];
  return value.filter((r): r is DriftRow => isNumberList(r) && r.length === 3);
}

/** The snapshot's `oversight` part; anything missing or malformed reads as absent (an older
 * kernel sends none). */
export function decodeOversight(value: unknown): Oversight {
  const msg = isObject(value) ? value : {};
  const health = isObject(msg.health) ? (msg.health as unknown as HealthFields) : null;
  const drift = isObject(msg.drift)
    ? {
        reference: typeof msg.drift.reference === "string" ? msg.drift.reference : "",
        test: typeof msg.drift.test === "string" ? msg.drift.test : "",
        divergence: typeof msg.drift.divergence === "number" ? msg.drift.divergence : null,
        hot: driftRows(msg.drift.hot),
        cold: driftRows(msg.drift.cold),
      }
    : null;
  return {
    health,
    drift,
    watched: isNumberList(msg.watched) ? msg.watched : [],
    watchHits: typeof msg.watch_hits === "number" ? msg.watch_hits : 0,
  };
}

/** `[feature, value]`; value is null when it was not finite. */
export type FeatureValue = [number, number | null];

export interface ActivationRecordMessage {
  request_id: string;
  row: number;
  position: number;
  timestamp: number;
  /** The input token, when known (absent from old kernels). */
  token_id?: number | null;
  /** Its text, when the kernel knows a tokenizer. */
  token?: string | null;
  top: FeatureValue[];
  values: FeatureValue[];
}

/** The raw `snapshot` trait: `Snapshot.to_message()`. */
export interface SnapshotMessage {
  version: number;
  sequence: number;
  timestamp: number;
  state: MonitorState;
  table_metric: string;
  table_features: Binary; // int32 [rows]
  table_columns: Record<TableColumn, Binary>; // float64 [rows] each, NaN = undefined
  frequency_edges: Binary; // float32 [bins + 1], log10(active_ratio)
  frequency_counts: Binary; // int32 [bins]
  never_fired: number;
  never_seen: number;
  value_features: Binary; // int32 [S]
  value_edges: Binary; // float32 [E]
  value_counts: Binary; // float64 [S * (1 + E - 1)]
  records: ActivationRecordMessage[];
  /** Per table row, the feature's label cut short, or null (absent from old kernels). */
  table_labels?: (string | null)[];
  /** Per table row without a label: its top tokens as [text, count] pairs, or null (absent
   * from old kernels). An automatic descriptor, never a label. */
  table_top_tokens?: ([string, number][] | null)[];
  /** Per selected feature (absent from old kernels). */
  feature_panels?: FeaturePanelMessage[];
  /** The search that chose the table's features ("" for none; absent from old kernels). */
  table_search?: string;
  /** Health, drift and watches (absent from old kernels; see `decodeOversight`). */
  oversight?: Record<string, unknown>;
}

/** One of a feature's top-activating examples, as the kernel sends it. */
export interface PanelExample {
  value: number | null;
  request_id: string;
  row: number;
  position: number;
  /** Where the activating token is in the window (-1: unknown). */
  index: number;
  /** Token text (with a tokenizer) ... */
  tokens?: (string | null)[];
  /** ... or token ids (without one). */
  token_ids?: number[];
  /** The feature's activation on each window token; null where not known. */
  activations: (number | null)[];
}

/** A feature a selected one fires with: [feature, jaccard, both, active, label or null] —
 * `both`: tokens where both fired; `active`: tokens where this one did (over the same tokens). */
export type CoFiringRow = [number, number, number, number, string | null];

/** What a selected feature fires with, counted since it was selected; ranked by Jaccard. */
export interface FiresWithMessage {
  /** Tokens counted since the feature was selected (or the last reset). */
  tokens: number;
  /** Of them, tokens where the feature itself fired. */
  active: number;
  features: CoFiringRow[];
}

/** A vocabulary token and a feature's direct effect on its logit: [token_id, text or null
 * (no tokenizer), value of W_dec[feature] @ W_U]. */
export type LogitRow = [number, string | null, number];

/** What a selected feature's decoder direction promotes and suppresses (W_dec[f] @ W_U, no
 * final layer norm), with the histogram of those values over the vocabulary: `counts` in equal
 * bins from `lo` to `hi`. `source` says where W_U came from (e.g. "input embeddings (tied)"). */
export interface LogitsMessage {
  source: string;
  top: LogitRow[];
  bottom: LogitRow[];
  lo: number;
  hi: number;
  counts: number[];
}

/** A selected feature's panel: what it means and where it fired hardest. */
export interface FeaturePanelMessage {
  feature: number;
  label: string | null;
  count: number;
  active_ratio: number | null;
  mean_active: number | null;
  max: number | null;
  examples: PanelExample[];
  /** A uniform sample of the feature's activating tokens, each with `sampled: true` (absent
   * from old kernels, and when none fits the panel's budget). */
  samples?: (PanelExample & { sampled?: boolean })[];
  /** Absent from old kernels. */
  fires_with?: FiresWithMessage;
  /** Absent without an unembedding (and from old kernels). */
  logits?: LogitsMessage;
  /** [q, value] of the active values for q = 0.5, 0.9, 0.99, read from the feature's
   * distribution since the reset (within a bin's ratio); null when it never fired; absent from
   * old kernels. */
  quantiles?: [number, number | null][] | null;
}

/** One of a feature's most frequent activating tokens (from its kept examples). */
export interface TopToken {
  text: string;
  count: number;
}

/** `[text, count]` pairs as the kernel sends them, or null for anything else. */
export function decodeTopTokens(value: unknown): TopToken[] | null {
  if (!Array.isArray(value) || value.length === 0) return null;
  const out: TopToken[] = [];
  for (const pair of value.slice(0, 8)) {
    if (!Array.isArray(pair) || typeof pair[0] !== "string" || typeof pair[1] !== "number") return null;
    out.push({ text: pair[0], count: pair[1] });
  }
  return out;
}

/** One selected feature's value histogram: counts[0] is the inactive bin, then E-1 log bins. */
export interface ValueHistogram {
  feature: number;
  counts: Float64Array;
}

/** A decoded snapshot: typed arrays in place of the binary fields. */
export interface Snapshot {
  version: number;
  sequence: number;
  timestamp: number;
  state: MonitorState;
  tableMetric: string;
  tableFeatures: Int32Array;
  tableColumns: Record<TableColumn, Float64Array>;
  /** Per table row: the feature's label, or null. */
  tableLabels: (string | null)[];
  /** Per table row without a label: its most frequent activating tokens, or null. */
  tableTopTokens: (TopToken[] | null)[];
  /** Per selected feature: label, statistics and top examples. */
  panels: FeaturePanelMessage[];
  /** The search that chose the table's features ("" for none). */
  tableSearch: string;
  frequencyEdges: Float32Array;
  frequencyCounts: Int32Array;
  neverFired: number;
  neverSeen: number;
  valueEdges: Float32Array;
  values: ValueHistogram[];
  records: ActivationRecordMessage[];
  oversight: Oversight;
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/** Copy of the bytes of a binary field (never a view onto the original buffer). */
export function copyBytes(value: unknown, field: string): Uint8Array {
  if (value instanceof DataView) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice();
  }
  if (value instanceof ArrayBuffer) {
    return new Uint8Array(value).slice();
  }
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice();
  }
  throw new ProtocolError(`snapshot field ${field} is not binary data (got ${describe(value)})`);
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}

type Kind = "int32" | "float32" | "float64";
const SIZE: Record<Kind, number> = { int32: 4, float32: 4, float64: 8 };

function decodeArray(value: unknown, field: string, kind: "int32"): Int32Array;
function decodeArray(value: unknown, field: string, kind: "float32"): Float32Array;
function decodeArray(value: unknown, field: string, kind: "float64"): Float64Array;
function decodeArray(
  value: unknown,
  field: string,
  kind: Kind,
): Int32Array | Float32Array | Float64Array {
  if (Array.isArray(value)) {
    // Plain JSON numbers (e.g. a hand-made state); null stands for NaN.
    const nums = value.map((v: unknown) => (typeof v === "number" ? v : NaN));
    if (kind === "int32") return Int32Array.from(nums);
    if (kind === "float32") return Float32Array.from(nums);
    return Float64Array.from(nums);
  }
  const bytes = copyBytes(value, field);
  const size = SIZE[kind];
  if (bytes.byteLength % size !== 0) {
    throw new ProtocolError(
      `snapshot field ${field} has ${bytes.byteLength} bytes, not a multiple of ${size} (${kind})`,
    );
  }
  const n = bytes.byteLength / size;
  // The copy starts at offset 0 of its own buffer, so it is aligned; read little-endian
  // explicitly so big-endian hosts decode correctly too.
  const view = new DataView(bytes.buffer, 0, bytes.byteLength);
  if (kind === "int32") {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = view.getInt32(i * 4, true);
    return out;
  }
  if (kind === "float32") {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
    return out;
  }
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true);
  return out;
}

export function decodeInt32(value: unknown, field = "value"): Int32Array {
  return decodeArray(value, field, "int32");
}
export function decodeFloat32(value: unknown, field = "value"): Float32Array {
  return decodeArray(value, field, "float32");
}
export function decodeFloat64(value: unknown, field = "value"): Float64Array {
  return decodeArray(value, field, "float64");
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** True for the `{}` the trait holds before the first snapshot (or null/undefined). */
export function isEmptySnapshot(value: unknown): boolean {
  return value === null || value === undefined || (isObject(value) && !("version" in value));
}

function num(value: unknown, field: string): number {
  if (typeof value !== "number") {
    throw new ProtocolError(`snapshot field ${field} is not a number (got ${describe(value)})`);
  }
  return value;
}

const cache = new WeakMap<object, Snapshot>();

/**
 * Decode the `snapshot` trait. Returns null before the first snapshot (`{}`); throws
 * `ProtocolError` for a message this frontend cannot read. Decoded snapshots are cached per
 * message object, so several views of one model decode each snapshot once.
 */
export function decodeSnapshot(value: unknown): Snapshot | null {
  if (isEmptySnapshot(value)) return null;
  if (!isObject(value)) {
    throw new ProtocolError(`snapshot is not an object (got ${describe(value)})`);
  }
  const hit = cache.get(value);
  if (hit) return hit;

  const msg = value;
  if (msg.version !== SNAPSHOT_VERSION) {
    throw new ProtocolError(
      `snapshot version ${String(msg.version)} is not supported (expected ${SNAPSHOT_VERSION}); ` +
        "rebuild the frontend to match the Python package",
    );
  }
  if (!isObject(msg.state)) throw new ProtocolError("snapshot field state is missing");
  if (!isObject(msg.table_columns)) throw new ProtocolError("snapshot field table_columns is missing");

  const tableFeatures = decodeInt32(msg.table_features, "table_features");
  const columns = {} as Record<TableColumn, Float64Array>;
  for (const name of TABLE_COLUMNS) {
    const raw = msg.table_columns[name];
    const col =
      raw === undefined
        ? new Float64Array(tableFeatures.length).fill(NaN)
        : decodeFloat64(raw, `table_columns.${name}`);
    if (col.length !== tableFeatures.length) {
      throw new ProtocolError(
        `table column ${name} has ${col.length} rows, table_features has ${tableFeatures.length}`,
      );
    }
    columns[name] = col;
  }

  const frequencyEdges = decodeFloat32(msg.frequency_edges, "frequency_edges");
  const frequencyCounts = decodeInt32(msg.frequency_counts, "frequency_counts");
  if (frequencyCounts.length > 0 && frequencyEdges.length !== frequencyCounts.length + 1) {
    throw new ProtocolError(
      `frequency_edges has ${frequencyEdges.length} edges for ${frequencyCounts.length} bins`,
    );
  }

  const valueFeatures = decodeInt32(msg.value_features, "value_features");
  const valueEdges = decodeFloat32(msg.value_edges, "value_edges");
  const valueCounts = decodeFloat64(msg.value_counts, "value_counts");
  // Per feature: bin 0 (inactive) then one bin between each pair of edges.
  const binsPerFeature = valueEdges.length; // 1 + (E - 1)
  if (valueCounts.length !== valueFeatures.length * binsPerFeature) {
    throw new ProtocolError(
      `value_counts has ${valueCounts.length} values; expected ${valueFeatures.length} features ` +
        `x ${binsPerFeature} bins`,
    );
  }
  const values: ValueHistogram[] = Array.from(valueFeatures, (feature, j) => ({
    feature,
    counts: valueCounts.slice(j * binsPerFeature, (j + 1) * binsPerFeature),
  }));

  const records = Array.isArray(msg.records) ? (msg.records as ActivationRecordMessage[]) : [];
  const state = msg.state as unknown as MonitorState;

  const snapshot: Snapshot = {
    version: SNAPSHOT_VERSION,
    sequence: num(msg.sequence, "sequence"),
    timestamp: num(msg.timestamp, "timestamp"),
    state: {
      ...state,
      selected_features: Array.isArray(state.selected_features) ? state.selected_features : [],
    },
    tableMetric: typeof msg.table_metric === "string" ? msg.table_metric : "mean",
    tableFeatures,
    tableColumns: columns,
    panels: Array.isArray(msg.feature_panels) ? (msg.feature_panels as FeaturePanelMessage[]) : [],
    tableSearch: typeof msg.table_search === "string" ? msg.table_search : "",
    tableLabels: Array.from(tableFeatures, (_, i) => {
      const label = Array.isArray(msg.table_labels) ? msg.table_labels[i] : null;
      return typeof label === "string" ? label : null;
    }),
    tableTopTokens: Array.from(tableFeatures, (_, i) =>
      decodeTopTokens(Array.isArray(msg.table_top_tokens) ? msg.table_top_tokens[i] : null),
    ),
    frequencyEdges,
    frequencyCounts,
    neverFired: num(msg.never_fired, "never_fired"),
    neverSeen: num(msg.never_seen, "never_seen"),
    valueEdges,
    values,
    records,
    oversight: decodeOversight(msg.oversight),
  };
  cache.set(value, snapshot);
  return snapshot;
}

// ---- commands (frontend -> kernel) ---------------------------------------------------------

export interface ConfigureChanges {
  features?: number[] | null;
  history_size?: number;
  top_k?: number;
  threshold?: number;
  throttle_ms?: number;
}

// Every form setting has a field in ConfigureChanges and nothing else does.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const formSettingsMatch: Same<keyof ConfigureChanges, FormSetting> = true;
void formSettingsMatch;

export type CommandBody =
  | { type: "configure"; changes: ConfigureChanges }
  | { type: "enable"; enabled: boolean }
  | { type: "clear_history" }
  | { type: "reset_statistics" }
  | { type: "rank"; metric: string }
  | { type: "select"; features: number[] }
  | { type: "table_rows"; rows: number }
  | { type: "search"; text: string }
  | { type: "probe"; text: string; feature: number | null };

export type Command = CommandBody & { id: number };

// Every command the kernel answers has a body here and nothing else does.
const commandsMatch: Same<CommandBody["type"], CommandType> = true;
void commandsMatch;

// ---- replies (kernel -> frontend) ----------------------------------------------------------

export interface Reply {
  type: "reply";
  id: number;
  ok: boolean;
  message: string;
  error: string | null;
  /** What a successful command answers with beyond its message (`probe`: `ProbeData`). */
  data?: unknown;
}

/** A `probe` reply's data: the probed text token by token (bounded by the kernel). */
export interface ProbeData {
  /** The feature whose values shade the tokens (null: none). */
  feature: number | null;
  tokens: string[];
  /** The shaded feature's value on each token (null: not known). */
  values: (number | null)[];
  /** Per token: its top features as [feature, value], highest first. */
  top: [number, number | null][][];
  /** Labels of the features named, by feature index. */
  labels: Record<string, string>;
  /** Tokens were left out to keep the reply small. */
  truncated: boolean;
}

/** `data` of a `probe` reply, checked; a ProtocolError when it is not one. */
export function decodeProbeData(data: unknown): ProbeData {
  if (!isObject(data)) throw new ProtocolError(`probe reply has no data (got ${describe(data)})`);
  const { feature, tokens, values, top, labels, truncated } = data;
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) {
    throw new ProtocolError("probe reply tokens must be strings");
  }
  if (!Array.isArray(values) || values.length !== tokens.length) {
    throw new ProtocolError(`probe reply has ${String(Array.isArray(values) && values.length)} values for ${tokens.length} tokens`);
  }
  if (!Array.isArray(top) || top.length !== tokens.length) {
    throw new ProtocolError("probe reply top must have one list per token");
  }
  const pairs = top.map((list) =>
    (Array.isArray(list) ? list : []).filter(
      (p): p is [number, number | null] => Array.isArray(p) && typeof p[0] === "number",
    ),
  );
  const names: Record<string, string> = {};
  if (isObject(labels)) for (const [k, v] of Object.entries(labels)) if (typeof v === "string") names[k] = v;
  return {
    feature: typeof feature === "number" ? feature : null,
    tokens: tokens as string[],
    values: values.map((v) => (typeof v === "number" ? v : null)),
    top: pairs,
    labels: names,
    truncated: truncated === true,
  };
}

export function isReply(msg: unknown): msg is Reply {
  return isObject(msg) && msg.type === "reply" && typeof msg.id === "number";
}
