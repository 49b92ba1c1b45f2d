/**
 * Top-features table. Rows come ranked from the kernel (over all features): clicking a column
 * header asks the kernel to rank by that metric (`rank`), never re-sorts here. Clicking a row
 * toggles the feature's value histogram (`select`, at most 8, newest replacing oldest).
 */

import type { Component, ViewContext } from "./component";
import { h, setAttr, setText } from "./dom";
import { Feedback } from "./feedback";
import { formatCount, formatFloat, formatInt, formatPercent, fullPrecision } from "./format";
import { MAX_SELECTED, METRICS, type Snapshot, type TableColumn, type TopToken } from "./protocol";

interface ColumnDef {
  metric: TableColumn;
  label: string;
  title: string;
  format: (v: number) => string;
}

export const COLUMNS: ColumnDef[] = [
  { metric: "mean", label: "mean", title: "mean value over all tokens", format: formatFloat },
  {
    metric: "mean_active",
    label: "mean active",
    title: "mean value over tokens where the feature is active",
    format: formatFloat,
  },
  { metric: "max", label: "max", title: "largest value", format: formatFloat },
  {
    metric: "active_ratio",
    label: "active ratio",
    title: "fraction of tokens where the feature is active",
    format: formatPercent,
  },
  { metric: "count", label: "count", title: "tokens with a finite value", format: formatCount },
  { metric: "active_count", label: "active", title: "tokens where the feature is active", format: formatCount },
  { metric: "std", label: "std", title: "standard deviation over all tokens", format: formatFloat },
];

export const ROW_CHOICES = [10, 20, 50, 100, 200];
/** Typing pause before a search is sent (ms). */
export const SEARCH_DELAY_MS = 250;

/** Toggle `feature` in `current`; keep at most `max`, dropping the oldest. */
export function toggleSelection(current: readonly number[], feature: number, max = MAX_SELECTED): number[] {
  if (current.includes(feature)) return current.filter((f) => f !== feature);
  const next = [...current, feature];
  while (next.length > max) next.shift();
  return next;
}

interface Row {
  tr: HTMLTableRowElement;
  button: HTMLButtonElement;
  label: HTMLSpanElement;
  /** A row without a label: its top tokens (an automatic descriptor, styled apart). */
  tops: HTMLSpanElement;
  cells: HTMLTableCellElement[];
}

/** Top tokens as the table shows them: `'the'×3 'by'×1`. */
export function topTokensText(tops: readonly TopToken[] | null): string {
  return tops ? tops.map((t) => `'${t.text}'×${t.count}`).join(" ") : "";
}

const TOP_TOKENS_TITLE = "most frequent tokens of its top examples (automatic, not a label)";

export class TopTable implements Component {
  readonly el: HTMLElement;
  readonly table: HTMLTableElement;
  readonly feedback = new Feedback("table");
  readonly metricSelect: HTMLSelectElement;
  readonly rowsSelect: HTMLSelectElement;
  readonly searchInput: HTMLInputElement;
  private searchTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly caption = h("caption", {});
  private readonly tbody = h("tbody", {});
  private readonly headers = new Map<string, HTMLTableCellElement>();
  private readonly rows: Row[] = [];
  private snapshot: Snapshot | null = null;
  private pendingSelection: number[] | null = null;
  private lastSelectId = -1;
  private clearPendingOnSnapshot = false;
  private requestedRows: number | null = null;

  constructor(private readonly ctx: ViewContext) {
    const { signal } = ctx;
    const headRow = h("tr", {}, h("th", { scope: "col", class: "idx" }, "feature"));
    for (const col of COLUMNS) {
      const th = h(
        "th",
        { scope: "col", "data-metric": col.metric, title: `${col.title}; click to rank by it` },
        h(
          "button",
          { type: "button", class: "featmon-sort", "aria-label": `Rank features by ${col.label}` },
          col.label,
        ),
      );
      this.headers.set(col.metric, th);
      headRow.append(th);
    }
    this.table = h(
      "table",
      { class: "featmon-table", "data-testid": "table-top" },
      this.caption,
      h("thead", {}, headRow),
      this.tbody,
    );
    this.table.addEventListener("click", (event) => this.onClick(event), { signal });
    // Full-precision tooltips are written when a cell is hovered, not on every snapshot: at
    // 200 rows that halves the DOM writes of an update.
    this.tbody.addEventListener("mouseover", (event) => this.showFullValue(event), { signal });

    this.metricSelect = h(
      "select",
      { "data-testid": "select-metric", "aria-label": "Rank features by metric" },
      ...METRICS.map((m) => h("option", { value: m }, m)),
    );
    this.metricSelect.addEventListener("change", () => this.rank(this.metricSelect.value), { signal });

    this.rowsSelect = h(
      "select",
      { "data-testid": "select-rows", "aria-label": "Rows in the table" },
      ...ROW_CHOICES.map((n) => h("option", { value: String(n) }, String(n))),
    );
    this.rowsSelect.value = "50";
    this.rowsSelect.addEventListener("change", () => this.setRows(Number(this.rowsSelect.value)), {
      signal,
    });

    this.searchInput = h("input", {
      type: "search",
      "data-testid": "table-search",
      "aria-label": "Search features by index or label",
      placeholder: "index or label",
    });
    // The kernel searches every feature; wait for a pause in typing before asking it.
    this.searchInput.addEventListener(
      "input",
      () => {
        if (this.searchTimer !== undefined) clearTimeout(this.searchTimer);
        this.searchTimer = setTimeout(() => {
          this.searchTimer = undefined;
          this.search(this.searchInput.value);
        }, SEARCH_DELAY_MS);
      },
      { signal },
    );

    this.el = h(
      "section",
      { class: "featmon-top", "aria-label": "Top features" },
      h(
        "div",
        { class: "featmon-table-head" },
        h("h3", {}, "Top features"),
        h("label", { class: "featmon-inline" }, "rank by ", this.metricSelect),
        h("label", { class: "featmon-inline" }, "rows ", this.rowsSelect),
        h("label", { class: "featmon-inline" }, "search ", this.searchInput),
        this.feedback.el,
      ),
      h("div", { class: "featmon-table-scroll" }, this.table),
    );
    this.update(null);
  }

  update(snapshot: Snapshot | null): void {
    this.snapshot = snapshot;
    if (this.clearPendingOnSnapshot) {
      this.pendingSelection = null;
      this.clearPendingOnSnapshot = false;
    }
    if (!snapshot) {
      setText(this.caption, "No statistics yet.");
      this.resize(0);
      return;
    }
    const metric = snapshot.tableMetric;
    for (const [name, th] of this.headers) {
      const active = name === metric;
      th.classList.toggle("active", active);
      setAttr(th, "aria-sort", active ? "descending" : null);
    }
    if (this.metricSelect.value !== metric && METRICS.includes(metric as never)) {
      this.metricSelect.value = metric;
    }
    const n = snapshot.tableFeatures.length;
    if (this.requestedRows === null && ROW_CHOICES.includes(n)) this.rowsSelect.value = String(n);
    const found = snapshot.tableSearch
      ? `${formatInt(n)} feature${n === 1 ? "" : "s"} matching '${snapshot.tableSearch}'`
      : `${formatInt(n)} of ${formatInt(snapshot.state.d_sae)} features`;
    setText(
      this.caption,
      `${found}, ranked by ${metric} in the kernel; click a header to rank, a row to show its ` +
        "histogram and examples",
    );

    const selected = new Set(snapshot.state.selected_features);
    const watched = new Set(snapshot.oversight.watched);
    this.resize(n);
    for (let i = 0; i < n; i++) {
      const feature = snapshot.tableFeatures[i]!;
      const row = this.rows[i]!;
      const key = String(feature);
      if (row.tr.dataset.feature !== key) {
        row.tr.dataset.feature = key;
        setText(row.button, key);
      }
      const isSelected = selected.has(feature);
      row.tr.classList.toggle("selected", isSelected);
      // A watched feature is marked (the mark's title says so; CSS draws it).
      row.tr.classList.toggle("watched", watched.has(feature));
      setAttr(row.tr, "title", watched.has(feature) ? "watched: its hits are reported" : null);
      setAttr(row.button, "aria-pressed", isSelected ? "true" : "false");
      setAttr(
        row.button,
        "aria-label",
        `${isSelected ? "Hide" : "Show"} the value histogram of feature ${feature}`,
      );
      const label = snapshot.tableLabels[i] ?? "";
      setText(row.label, label);
      setAttr(row.label, "title", label || null);
      const tops = label ? "" : topTokensText(snapshot.tableTopTokens[i] ?? null);
      setText(row.tops, tops);
      setAttr(row.tops, "title", tops ? TOP_TOKENS_TITLE : null);
      for (let c = 0; c < COLUMNS.length; c++) {
        const col = COLUMNS[c]!;
        const value = snapshot.tableColumns[col.metric][i]!;
        setText(row.cells[c]!, col.format(value));
      }
    }
  }

  private resize(n: number): void {
    while (this.rows.length < n) {
      const button = h("button", { type: "button", class: "featmon-feature" });
      const label = h("span", { class: "featmon-label" });
      const tops = h("span", { class: "featmon-top-tokens" });
      const cells = COLUMNS.map(() => h("td", { class: "num" }));
      const tr = h("tr", {}, h("td", { class: "idx" }, button, label, tops), ...cells);
      this.rows.push({ tr, button, label, tops, cells });
      this.tbody.append(tr);
    }
    while (this.rows.length > n) this.rows.pop()!.tr.remove();
  }

  private showFullValue(event: Event): void {
    const cell = (event.target as Element | null)?.closest("td.num");
    const tr = cell?.parentElement;
    if (!cell || !(tr instanceof HTMLTableRowElement) || !this.snapshot) return;
    const col = COLUMNS[(cell as HTMLTableCellElement).cellIndex - 1];
    const value = col && this.snapshot.tableColumns[col.metric][tr.sectionRowIndex];
    if (value !== undefined) setAttr(cell, "title", fullPrecision(value));
  }

  private onClick(event: Event): void {
    const target = event.target as Element | null;
    if (!target) return;
    const th = target.closest("th[data-metric]");
    if (th) {
      this.rank(th.getAttribute("data-metric")!);
      return;
    }
    const tr = target.closest("tr[data-feature]");
    if (tr && this.tbody.contains(tr)) this.toggle(Number(tr.getAttribute("data-feature")));
  }

  rank(metric: string): void {
    const th = this.headers.get(metric);
    th?.classList.add("pending");
    this.feedback.pending();
    this.ctx.commands.send({ type: "rank", metric }, (reply) => {
      th?.classList.remove("pending");
      this.feedback.reply(reply, `ranked by ${metric}`);
      if (!reply.ok && this.snapshot) this.metricSelect.value = this.snapshot.tableMetric;
    });
  }

  toggle(feature: number): void {
    if (!Number.isInteger(feature)) return;
    const base = this.pendingSelection ?? this.snapshot?.state.selected_features ?? [];
    const features = toggleSelection(base, feature);
    this.pendingSelection = features;
    this.clearPendingOnSnapshot = false;
    this.feedback.pending();
    const id = this.ctx.commands.send({ type: "select", features }, (reply) => {
      this.feedback.reply(reply, "selection updated");
      if (id !== this.lastSelectId) return;
      if (reply.ok) this.clearPendingOnSnapshot = true;
      else this.pendingSelection = null;
    });
    this.lastSelectId = id;
  }

  setRows(rows: number): void {
    const previous = this.requestedRows;
    this.requestedRows = rows;
    this.feedback.pending();
    this.ctx.commands.send({ type: "table_rows", rows }, (reply) => {
      this.feedback.reply(reply, `showing ${rows} rows`);
      if (!reply.ok) {
        this.requestedRows = previous;
        const shown = previous ?? this.snapshot?.tableFeatures.length ?? 50;
        this.rowsSelect.value = String(ROW_CHOICES.includes(shown) ? shown : 50);
      }
    });
  }

  search(text: string): void {
    this.feedback.pending();
    this.ctx.commands.send({ type: "search", text }, (reply) => this.feedback.reply(reply));
  }

  destroy(): void {
    if (this.searchTimer !== undefined) clearTimeout(this.searchTimer);
    this.feedback.destroy();
  }
}
