// Small helpers to build the DOM without innerHTML (nothing the API returns is ever parsed as HTML).
type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = String(v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, ...children);
  return el;
}

export function append(el: Node, ...children: Child[]): void {
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
}

export function clear(el: Node, ...children: Child[]): void {
  while (el.firstChild) el.removeChild(el.firstChild);
  append(el, ...children);
}

let uid = 0;
/** A labelled form field: every input has a visible label. */
export function field(label: string, input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, hint?: string): HTMLElement {
  input.id ||= `f${++uid}`;
  const hintEl = hint ? h("small", { id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, hintEl);
}

export function select(name: string, options: [string, string][], value?: string | null): HTMLSelectElement {
  const s = h("select", { name });
  for (const [v, text] of options) s.append(h("option", { value: v, selected: v === (value ?? "") }, text));
  return s;
}

/** A secret or a snippet shown once, with a button that copies it. */
export function copyBlock(label: string, text: string): HTMLElement {
  const pre = h("pre", { tabindex: 0, "aria-label": label }, h("code", {}, text));
  const btn = h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      await navigator.clipboard?.writeText(text).catch(() => undefined);
      btn.textContent = "Copied";
    },
  }, "Copy");
  return h("div", { class: "copy" }, h("h4", {}, label), pre, btn);
}

export function say(message: string): void {
  const status = document.getElementById("status");
  if (status) status.textContent = message;
}

export function errorBox(err: unknown): HTMLElement {
  return h("p", { class: "error", role: "alert" }, err instanceof Error ? err.message : String(err));
}

// -- numbers in the household's own units, time zone and currency ------------------------------
export interface Household {
  timezone: string;
  currency: string;
}

export const kwh = (v: number | null | undefined, digits = 3) =>
  v === null || v === undefined ? "–" : `${v.toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits })} kWh`;
export const watts = (v: number | null | undefined) =>
  v === null || v === undefined ? "–" : v >= 10000 ? `${(v / 1000).toLocaleString("en", { maximumFractionDigits: 2 })} kW` : `${Math.round(v).toLocaleString("en")} W`;
export const money = (v: number | null | undefined, hh: Household) =>
  v === null || v === undefined ? "–" : v.toLocaleString("en", { style: "currency", currency: hh.currency, minimumFractionDigits: 2, maximumFractionDigits: 2 });

export function localTime(ms: number, tz: string, opts: Intl.DateTimeFormatOptions): string {
  return new Intl.DateTimeFormat("en-GB", { timeZone: tz, ...opts }).format(new Date(ms));
}

/** The calendar date (YYYY-MM-DD) of an instant in a zone. */
export function localDate(ms: number, tz: string): string {
  return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date(ms));
}

export function download(name: string, text: string, type = "text/csv"): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
