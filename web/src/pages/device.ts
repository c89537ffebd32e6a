// A device: live power (last hour, moving), usage by hour / day / month with cost against the
// period before, raw readings page by page, and its settings (name, time zone, disable, key).
import { api, stream } from "../api";
import { Chart } from "../chart";
import { keyExamples, placementFields, DEVICE_TYPES, type Placed } from "../devices";
import { clear, errorBox, field, h, kwh, localDate, localTime, money, say, select } from "../dom";
import { home, session, type Page } from "../main";

type Gran = "hour" | "day" | "month";
const HOUR_MS = 3_600_000;

/** The local calendar span a view shows: a day of hours, a month of days, a year of months. */
export function span(g: Gran, anchor: string): { from: string; to: string; prev: string; next: string; label: string } {
  const [y, m, d] = anchor.split("-").map(Number);
  const iso = (yy: number, mm: number, dd: number) => {
    const t = new Date(Date.UTC(yy, mm - 1, dd));
    return t.toISOString().slice(0, 10);
  };
  if (g === "hour") return { from: iso(y, m, d), to: iso(y, m, d + 1), prev: iso(y, m, d - 1), next: iso(y, m, d + 1), label: iso(y, m, d) };
  if (g === "day") return { from: iso(y, m, 1), to: iso(y, m + 1, 1), prev: iso(y, m - 1, 1), next: iso(y, m + 1, 1), label: iso(y, m, 1).slice(0, 7) };
  return { from: iso(y, 1, 1), to: iso(y + 1, 1, 1), prev: iso(y - 1, 1, 1), next: iso(y + 1, 1, 1), label: String(y) };
}

export function devicePage(id: string): Page {
  return {
    title: "Device",
    async render(main, signal) {
      const device = await api("GET", `/devices/${encodeURIComponent(id)}`);
      // Priced in the device's own household's currency (it may not be the one switched to).
      const me = session.homes.find((x) => x.id === device.household_id) ?? home();
      const hh = { timezone: me.timezone, currency: me.currency };
      const tz: string = device.timezone;
      clear(main, h("p", {}, h("a", { href: "#/" }, "← Home")), h("h1", {}, device.name), h("p", {}, `${device.type} · time zone ${tz}${device.disabled ? " · disabled" : ""}`));

      // -- live: the last hour, moving ------------------------------------------------------
      const since = Date.now() - HOUR_MS;
      const first = await api("GET", `/devices/${encodeURIComponent(id)}/readings?from=${encodeURIComponent(new Date(since).toISOString())}&limit=10000`);
      const xs: number[] = [];
      const ys: (number | null)[] = [];
      for (const r of first.items) if (r.power_w !== null) (xs.push(r.ts_ms / 1000), ys.push(r.power_w));
      const fmtTime = (s: number) => localTime(s * 1000, tz, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
      const liveSummary = () => (ys.length ? `Power over the last hour: latest ${ys[ys.length - 1]} W at ${fmtTime(xs[xs.length - 1])}, highest ${Math.max(...(ys as number[]))} W.` : "No readings in the last hour.");
      const live = new Chart({ title: "Power, last hour", xs, series: [{ label: "Power (W)", values: ys }], tz, yLabel: "power (W)", summary: liveSummary(), formatX: fmtTime, height: 220 });
      const liveBox = h("section", { class: "card", "aria-labelledby": "live-h" }, h("h2", { id: "live-h" }, "Live power"), live.el);
      if (!xs.length)
        liveBox.append(h("p", { class: "empty" }, "No data yet: send a reading with this device's key (rotate the key below to get a new one with examples)."));
      main.append(liveBox);
      stream(`/devices/${encodeURIComponent(id)}/live`, (event, r) => {
        if (event !== "reading" || r.power_w === null || (xs.length && r.ts_ms / 1000 <= xs[xs.length - 1])) return;
        xs.push(r.ts_ms / 1000);
        ys.push(r.power_w);
        const cut = (Date.now() - HOUR_MS) / 1000;
        while (xs.length && xs[0] < cut) (xs.shift(), ys.shift());
        live.update(xs, [ys], liveSummary());
      }, signal);

      // -- usage by hour / day / month ----------------------------------------------------
      let gran: Gran = "hour";
      let anchor = localDate(Date.now(), tz);
      const usageBox = h("section", { class: "card", "aria-labelledby": "usage-h" });
      main.append(usageBox);
      const drawUsage = async () => {
        const s = span(gran, anchor);
        const prevSpan = span(gran, s.prev);
        const base = `/devices/${encodeURIComponent(id)}/usage?granularity=${gran}&tz=${encodeURIComponent(tz)}`;
        const [cur, prev] = await Promise.all([api("GET", `${base}&from=${s.from}&to=${s.to}`), api("GET", `${base}&from=${prevSpan.from}&to=${prevSpan.to}`)]);
        const sum = (items: any[], k: string) => items.reduce((a, i) => a + i[k], 0);
        const curKwh = sum(cur.items, "energy_kwh");
        const prevKwh = sum(prev.items, "energy_kwh");
        const change = prevKwh > 0 ? ((curKwh - prevKwh) / prevKwh) * 100 : null;
        // A DST day's repeated hour is told apart by its UTC offset.
        const dstDay = gran === "hour" && cur.items.length !== 24;
        const fmt = gran === "hour" ? { hour: "2-digit", minute: "2-digit", hourCycle: "h23", ...(dstDay ? { timeZoneName: "shortOffset" } : {}) } : gran === "day" ? { day: "numeric", month: "short" } : { month: "short", year: "numeric" };
        const fmtX = (sec: number) => localTime(sec * 1000, tz, fmt as Intl.DateTimeFormatOptions);
        const xs = cur.items.map((i: any) => Date.parse(i.period_start) / 1000);
        const chart = new Chart({
          title: `Energy by ${gran}, ${s.label}`,
          xs,
          series: [
            { label: "Energy (kWh)", values: cur.items.map((i: any) => i.energy_kwh), kind: "bars" },
            { label: `Cost (${me.currency})`, values: cur.items.map((i: any) => i.cost), kind: "line", color: "#b35900", right: true },
          ],
          tz,
          yLabel: "energy (kWh)",
          y2Label: `cost (${me.currency})`,
          summary: `${kwh(curKwh)} and ${money(sum(cur.items, "cost"), hh)} in ${s.label} over ${cur.items.length} ${gran}s with data.`,
          formatX: fmtX,
        });
        const gb = (g: Gran, text: string) => h("button", { type: "button", class: g === gran ? "" : "secondary", "aria-pressed": String(g === gran), onclick: () => ((gran = g), drawUsage()) }, text);
        const picker = h("input", { type: "date", value: anchor, onchange: (e: Event) => ((anchor = (e.target as HTMLInputElement).value || anchor), drawUsage()) });
        const table = h(
          "table",
          { class: "usage-table" },
          h("caption", {}, `Usage by ${gran} (${tz})`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, gran), h("th", { scope: "col" }, "kWh"), h("th", { scope: "col" }, `cost (${me.currency})`), h("th", { scope: "col" }, "avg W"), h("th", { scope: "col" }, "max W"))),
          h("tbody", {}, ...cur.items.map((i: any) => h("tr", {}, h("th", { scope: "row" }, fmtX(Date.parse(i.period_start) / 1000)), h("td", {}, i.energy_kwh.toFixed(3)), h("td", {}, i.cost.toFixed(2)), h("td", {}, i.avg_power_w === null ? "–" : Math.round(i.avg_power_w)), h("td", {}, i.max_power_w ?? "–")))),
        );
        clear(
          usageBox,
          h("h2", { id: "usage-h" }, "Usage"),
          h("div", { class: "toolbar", role: "group", "aria-label": "Granularity" }, gb("hour", "By hour"), gb("day", "By day"), gb("month", "By month")),
          h(
            "div",
            { class: "toolbar" },
            h("button", { type: "button", class: "secondary", onclick: () => ((anchor = s.prev), drawUsage()) }, "← Previous"),
            field("Period containing", picker),
            h("button", { type: "button", class: "secondary", onclick: () => ((anchor = s.next), drawUsage()) }, "Next →"),
          ),
          h("p", { class: "compare", "data-testid": "compare" }, `${s.label}: ${kwh(curKwh)} (${money(sum(cur.items, "cost"), hh)}); ${prevSpan.label}: ${kwh(prevKwh)}${change === null ? "" : ` (${change >= 0 ? "+" : ""}${change.toFixed(1)} %)`}`),
          cur.items.length ? chart.el : h("p", { class: "empty" }, "No usage in this period."),
          h("div", { class: "table-wrap" }, table),
        );
        say(`Usage by ${gran} for ${s.label}`);
        cursors.length = 1;
        await drawRaw(0); // raw readings from the first day shown
      };
      // -- raw readings ----------------------------------------------------------------------
      const rawBox = h("section", { class: "card", "aria-labelledby": "raw-h" });
      const cursors: (number | null)[] = [null];
      const drawRaw = async (page: number) => {
        const s = span(gran, anchor);
        const cursor = cursors[page];
        const q = `from=${encodeURIComponent(`${s.from}T00:00:00${offsetOf(tz, s.from)}`)}&limit=50${cursor !== null ? `&cursor=${cursor}` : ""}`;
        const data = await api("GET", `/devices/${encodeURIComponent(id)}/readings?${q}`);
        cursors[page + 1] = data.next_cursor;
        clear(
          rawBox,
          h("h2", { id: "raw-h" }, `Raw readings from ${s.label}`),
          data.items.length
            ? h(
                "div",
                { class: "table-wrap" },
                h(
                  "table",
                  {},
                  h("caption", {}, `Raw readings, page ${page + 1}`),
                  h("thead", {}, h("tr", {}, ...["time", "power (W)", "energy (Wh)", "voltage (V)", "current (A)"].map((c) => h("th", { scope: "col" }, c)))),
                  h("tbody", {}, ...data.items.map((r: any) => h("tr", {}, h("th", { scope: "row" }, localTime(r.ts_ms, tz, { dateStyle: "short", timeStyle: "medium" })), h("td", {}, r.power_w ?? "–"), h("td", {}, r.energy_wh ?? "–"), h("td", {}, r.voltage_v ?? "–"), h("td", {}, r.current_a ?? "–")))),
                ),
              )
            : h("p", { class: "empty" }, "No readings from this day on."),
          h(
            "div",
            { class: "toolbar" },
            h("button", { type: "button", class: "secondary", disabled: page === 0, onclick: () => drawRaw(page - 1) }, "← Earlier page"),
            h("button", { type: "button", class: "secondary", disabled: !data.next_cursor, onclick: () => drawRaw(page + 1) }, "Later page →"),
          ),
        );
      };
      await drawUsage();
      main.append(rawBox);


      // -- settings ------------------------------------------------------------------------
      const name = h("input", { type: "text", value: device.name, required: true });
      const type = select("type", DEVICE_TYPES, device.type);
      const zone = h("input", { type: "text", value: device.timezone });
      const disabled = h("input", { type: "checkbox", checked: device.disabled });
      // The devices it may sit inside: the others of its own household (not the one on show).
      const siblings = (await api<Placed[]>("GET", `/devices?limit=1000&household_id=${encodeURIComponent(device.household_id)}`)).filter((d: any) => d.id !== id);
      const placed = placementFields(siblings, device.role, device.parent_id);
      const out = h("div", {});
      main.append(
        h(
          "form",
          {
            class: "card",
            "aria-labelledby": "dev-settings",
            onsubmit: async (e: Event) => {
              e.preventDefault();
              try {
                await api("PATCH", `/devices/${encodeURIComponent(id)}`, { name: name.value, type: type.value, timezone: zone.value || null, disabled: disabled.checked, role: placed.role.value, parent_id: placed.parent.value || null });
                clear(out, h("p", { role: "status" }, "Saved."));
              } catch (err) {
                clear(out, errorBox(err));
              }
            },
          },
          h("h2", { id: "dev-settings" }, "Device settings"),
          h("div", { class: "row" }, field("Name", name), field("Type", type), field("Time zone", zone, "IANA name; empty: the household's")),
          placed.row,
          h("div", { class: "field check" }, disabled, h("label", { for: (disabled.id = "dev-disabled") }, "Disabled (its readings are refused)")),
          h("button", { type: "submit" }, "Save"),
          " ",
          h("button", {
            type: "button",
            class: "secondary",
            onclick: async () => {
              if (!confirm("Rotate the key? The old key stops working at once.")) return;
              try {
                const d = await api("POST", `/devices/${encodeURIComponent(id)}/rotate-key`);
                clear(out, keyExamples(d));
              } catch (err) {
                clear(out, errorBox(err));
              }
            },
          }, "Rotate key"),
          out,
        ),
      );
    },
  };
}

/** The UTC offset ("+01:00") of a zone at the start of a local date. */
function offsetOf(tz: string, date: string): string {
  const probe = new Date(`${date}T12:00:00Z`);
  const name = new Intl.DateTimeFormat("en-US", { timeZone: tz, timeZoneName: "longOffset" }).formatToParts(probe).find((p) => p.type === "timeZoneName")?.value ?? "GMT";
  const m = name.match(/GMT([+-]\d{2}):?(\d{2})?/);
  return m ? `${m[1]}:${m[2] ?? "00"}` : "Z";
}
