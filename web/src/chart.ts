// Charts: uPlot (made for time series; fast with 100k points, zoom by drag, a cursor legend),
// drawn in the household's time zone, each with its numbers as a table and as CSV.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { download, h } from "./dom";

export interface Series {
  label: string; // with its unit, e.g. "Energy (kWh)"
  values: (number | null)[];
  kind?: "line" | "bars";
  color?: string;
  right?: boolean; // on the second (right-hand) axis, with its own scale
}

export interface ChartSpec {
  title: string;
  xs: number[]; // epoch seconds
  series: Series[];
  tz: string;
  yLabel: string;
  y2Label?: string; // the right-hand axis, for series with `right`
  xLabel?: string;
  summary: string; // the text alternative
  height?: number;
  formatX: (sec: number) => string; // for the table
  barsCentred?: boolean; // bars centred on their x (a day at noon), else from x (a period start)
}

const COLORS = ["#1f5fbf", "#b35900", "#217a3c", "#7a1fa2"];

// The time axis in 24-hour time and day-month dates (uPlot's defaults are 12-hour, "3pm", and
// US month/day), in the household's time zone (tzDate). Each row: the smallest tick step it
// serves (s), the label, then a second line added where the year / month / day / hour / minute /
// second rolls over (null: none), and 1 (append that line to the label).
const H = 3600;
const D = 24 * H;
const X_VALUES: uPlot.Axis.TimeValuesConfig = [
  [365 * D, "{YYYY}", null, null, null, null, null, null, 1],
  [28 * D, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
  [D, "{D} {MMM}", "\n{YYYY}", null, null, null, null, null, 1],
  [H, "{HH}:{mm}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
  [60, "{HH}:{mm}", "\n{D} {MMM} {YYYY}", null, "\n{D} {MMM}", null, null, null, 1],
  [1, ":{ss}", "\n{D} {MMM} {YYYY} {HH}:{mm}", null, "\n{D} {MMM} {HH}:{mm}", null, "\n{HH}:{mm}", null, 1],
  [0.001, ":{ss}.{fff}", "\n{D} {MMM} {YYYY} {HH}:{mm}", null, "\n{D} {MMM} {HH}:{mm}", null, "\n{HH}:{mm}", null, 1],
];

const fromZero = (_u: uPlot, min: number | null, max: number | null): uPlot.Range.MinMax => {
  const lo = Math.min(0, min ?? 0);
  const hi = Math.max(max ?? 1, lo + 1e-9);
  return [lo, hi + (hi - lo) * 0.05];
};

/** The x range: with bars, room for the whole of the first and the last bar. */
function spanAll(spec: ChartSpec): uPlot.Scale.Range {
  return (_u, min, max) => {
    if (!spec.series.some((s) => s.kind === "bars") || min === null || max === null) return [min!, max!];
    const step = spec.xs.length > 1 ? Math.min(...spec.xs.slice(1).map((x, i) => x - spec.xs[i])) : 3600;
    return spec.barsCentred ? [min - step / 2, max + step / 2] : [min, max + step];
  };
}

function opts(spec: ChartSpec, width: number): uPlot.Options {
  return {
    width,
    height: spec.height ?? 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), spec.tz),
    cursor: { drag: { x: true, y: false } },
    // Energy, power and money start at zero, so bars compare honestly.
    scales: { x: { time: true, range: spanAll(spec) }, y: { range: fromZero }, y2: { range: fromZero } },
    axes: [
      { label: spec.xLabel ?? `time (${spec.tz})`, stroke: "#333", grid: { stroke: "#e4e4e4" }, values: X_VALUES },
      { label: spec.yLabel, stroke: "#333", grid: { stroke: "#e4e4e4" }, size: 70 },
      ...(spec.y2Label ? [{ label: spec.y2Label, scale: "y2", side: 1, stroke: "#333", grid: { show: false }, size: 70 }] : []),
    ],
    series: [
      { label: "time", value: (_u, v) => (v == null ? "–" : spec.formatX(v)) },
      ...spec.series.map((s, i) => ({
        label: s.label,
        scale: s.right ? "y2" : "y",
        stroke: s.color ?? COLORS[i % COLORS.length],
        width: 2,
        fill: s.kind === "bars" ? `${s.color ?? COLORS[i % COLORS.length]}55` : undefined,
        paths: s.kind === "bars" ? uPlot.paths.bars!({ size: [0.8, 60], align: spec.barsCentred ? 0 : 1 }) : undefined,
        points: { show: s.kind !== "bars" && s.values.length < 200 },
      })),
    ],
  };
}

export class Chart {
  el: HTMLElement;
  plot: uPlot | null = null;
  private tableBox: HTMLElement;
  private summaryEl: HTMLElement;
  private spec: ChartSpec;
  private resize = new ResizeObserver(() => this.fit());

  constructor(spec: ChartSpec) {
    this.spec = spec;
    const canvasBox = h("div", { class: "plot", role: "img", "aria-label": spec.summary });
    this.summaryEl = h("p", { class: "chart-summary" }, spec.summary);
    this.tableBox = h("div", { class: "table-wrap" });
    this.el = h(
      "figure",
      { class: "chart" },
      h("figcaption", {}, spec.title),
      canvasBox,
      this.summaryEl,
      h(
        "details",
        {},
        h("summary", {}, "Show the numbers as a table"),
        h("button", { type: "button", class: "secondary", onclick: () => this.csv() }, "Download CSV"),
        this.tableBox,
      ),
    );
    queueMicrotask(() => {
      const start = performance.now();
      this.plot = new uPlot(opts(spec, Math.max(280, canvasBox.clientWidth || 600)), this.data(), canvasBox);
      this.resize.observe(canvasBox);
      // The draw time, to the next frame, for the benchmark (benchmarks/dashboard.py).
      requestAnimationFrame(() =>
        performance.measure("chart-draw", { start, end: performance.now(), detail: { title: spec.title, points: spec.xs.length } }),
      );
    });
    const details = this.el.querySelector("details") as HTMLDetailsElement;
    details.addEventListener("toggle", () => details.open && this.renderTable());
  }

  private data(): uPlot.AlignedData {
    return [this.spec.xs, ...this.spec.series.map((s) => s.values)] as uPlot.AlignedData;
  }

  private fit(): void {
    const box = this.el.querySelector(".plot") as HTMLElement;
    if (this.plot && box.clientWidth) this.plot.setSize({ width: box.clientWidth, height: this.spec.height ?? 260 });
  }

  update(xs: number[], series: (number | null)[][], summary?: string): void {
    this.spec.xs = xs;
    series.forEach((v, i) => (this.spec.series[i].values = v));
    if (summary) {
      this.spec.summary = summary;
      this.summaryEl.textContent = summary;
      this.el.querySelector(".plot")?.setAttribute("aria-label", summary);
    }
    this.plot?.setData(this.data());
    if ((this.el.querySelector("details") as HTMLDetailsElement).open) this.renderTable();
  }

  private rows(): string[][] {
    return this.spec.xs.map((x, i) => [this.spec.formatX(x), ...this.spec.series.map((s) => (s.values[i] == null ? "" : String(s.values[i])))]);
  }

  private renderTable(): void {
    const rows = this.rows().slice(-500);
    const table = h(
      "table",
      {},
      h("caption", {}, this.spec.title),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, `time (${this.spec.tz})`), ...this.spec.series.map((s) => h("th", { scope: "col" }, s.label)))),
      h("tbody", {}, ...rows.map((r) => h("tr", {}, h("th", { scope: "row" }, r[0]), ...r.slice(1).map((c) => h("td", {}, c))))),
    );
    this.tableBox.replaceChildren(table);
  }

  private csv(): void {
    const head = [`time (${this.spec.tz})`, ...this.spec.series.map((s) => s.label)];
    const quote = (c: string) => (/[",\n]/.test(c) ? `"${c.replace(/"/g, '""')}"` : c);
    const text = [head, ...this.rows()].map((r) => r.map(quote).join(",")).join("\n");
    download(`${this.spec.title.replace(/\W+/g, "-").toLowerCase()}.csv`, text + "\n");
  }

  destroy(): void {
    this.resize.disconnect();
    this.plot?.destroy();
  }
}
