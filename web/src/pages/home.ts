// Home: live power of every device and what the home consumes now (each watt once: a main meter's
// sub-meters break it down), today with what no plug explains ("other"), this month with its
// forecast, baseload, top devices, open alerts. Readings arrive over each device's SSE stream; the
// totals follow a few seconds later.
import { api, stream } from "../api";
import { addDeviceForm, consumptionWeights } from "../devices";
import { clear, h, kwh, localDate, money, watts } from "../dom";
import { home, inHome, loadMe, redraw, session, type Page } from "../main";

interface Device {
  id: string;
  household_id: string;
  name: string;
  type: string;
  disabled: boolean;
  timezone: string;
  household_id: string;
  role: string;
  parent_id: string | null;
}

export function homePage(): Page {
  return {
    title: "Home",
    async render(main, signal) {
      if (!session.me) await loadMe();
      const here = home();
      const power = new Map<string, { w: number | null; at: number }>();
      const total = h("output", { class: "big", "aria-live": "off", id: "total-power" }, "–");
      const tiles = h("ul", { class: "tiles", "aria-label": "Live power by device" });
      const today = h("div", { class: "stat", id: "today" }, h("h2", {}, "Today"), h("p", {}, "…"));
      const month = h("div", { class: "stat", id: "month" }, h("h2", {}, "This month"), h("p", {}, "…"));
      const base = h("div", { class: "stat", id: "baseload" }, h("h2", {}, "Baseload"), h("p", {}, "…"));
      const top = h("section", { class: "card", "aria-labelledby": "top-title" }, h("h2", { id: "top-title" }, "Top devices this month"));
      const alerts = h("section", { class: "card", "aria-labelledby": "alerts-title" }, h("h2", { id: "alerts-title" }, "Open alerts"));

      const hh = { timezone: here.timezone, currency: here.currency };
      let timer: number | undefined;
      const totals = async () => {
        const from = localDate(Date.now(), here.timezone);
        const [usage, summary, forecast, open] = await Promise.all([
          api("GET", inHome(`/usage?granularity=hour&from=${from}`)),
          api("GET", inHome("/insights/summary")).catch(() => null),
          api("GET", inHome("/insights/forecast")).catch(() => null),
          api("GET", inHome("/alerts?state=firing&limit=20")),
        ]);
        const todayKwh = usage.items.reduce((a: number, i: any) => a + i.energy_kwh, 0);
        const todayCost = usage.items.reduce((a: number, i: any) => a + i.cost, 0);
        const todayOther = usage.items.reduce((a: number, i: any) => a + (i.other_kwh ?? 0), 0);
        clear(
          today,
          h("h2", {}, "Today"),
          h("p", { class: "big" }, h("span", { "data-testid": "today-kwh" }, kwh(todayKwh))),
          h("p", {}, h("span", { "data-testid": "today-cost" }, money(todayCost, hh)), " so far"),
          usage.metered ? h("p", {}, h("span", { "data-testid": "today-other" }, kwh(todayOther)), " other (no plug of its own)") : "",
        );
        const m = forecast?.month;
        clear(
          month,
          h("h2", {}, "This month"),
          m
            ? [
                h("p", { class: "big" }, kwh(m.month_to_date_kwh, 1)),
                h("p", {}, `${money(m.month_to_date_cost, hh)} so far`),
                h("p", {}, `Forecast ${kwh(m.energy_kwh, 0)} (${kwh(m.energy_kwh_low, 0)}–${kwh(m.energy_kwh_high, 0)}), ${money(m.cost, hh)} (${money(m.cost_low, hh)}–${money(m.cost_high, hh)})`),
              ].reduce((f, n) => (f.append(n), f), document.createDocumentFragment())
            : h("p", {}, "A forecast needs a full day of data."),
        );
        const b = summary?.baseload;
        clear(base, h("h2", {}, "Baseload"), b ? [h("p", { class: "big" }, watts(b.power_w)), h("p", {}, `${kwh(b.yearly_kwh, 0)} a year, ${money(b.yearly_cost, hh)}`)].reduce((f, n) => (f.append(n), f), document.createDocumentFragment()) : h("p", {}, "Needs an hour of data."));
        const tops = summary?.top_devices ?? [];
        clear(
          top,
          h("h2", { id: "top-title" }, "Top devices this month"),
          tops.length
            ? h("ol", {}, ...tops.map((t: any) => h("li", {}, t.device_id ? h("a", { href: `#/devices/${t.device_id}` }, t.name) : h("span", { title: "What the main meter saw that no device of its own explains" }, "Other"), ` ${kwh(t.energy_kwh, 2)} · ${money(t.cost, hh)} · ${t.share_pct.toFixed(0)} %`)))
            : h("p", {}, "Nothing used this month yet."),
        );
        clear(
          alerts,
          h("h2", { id: "alerts-title" }, "Open alerts"),
          open.items.length
            ? h("ul", {}, ...open.items.map((a: any) => h("li", { class: `sev-${a.severity}` }, h("a", { href: "#/alerts" }, a.rule_name ?? "alert"), ` ${a.severity}, value ${a.value}`)))
            : h("p", {}, "None. ", h("a", { href: "#/alerts" }, "Set up alert rules")),
        );
      };
      // Every request of the first view at once: the page is ready after one round trip.
      const [devices] = await Promise.all([api<Device[]>("GET", inHome("/devices?limit=1000")), totals()]);
      const weights = consumptionWeights(devices);
      performance.mark("home-ready"); // every number shown: what the benchmark times

      clear(main, h("h1", {}, here.name));
      if (!devices.length) {
        main.append(
          h("section", { class: "card empty" }, h("h2", {}, "No devices yet"), h("p", {}, "Add your first device below: a meter, a smart plug, a solar inverter. You will get its key and examples of how to send readings.")),
          addDeviceForm(() => undefined),
          h("button", { type: "button", class: "secondary", onclick: redraw }, "Done: show my home"),
        );
        return;
      }

      const drawTiles = () => {
        let sum = 0;
        let any = false;
        const now = Date.now();
        clear(
          tiles,
          ...devices.map((d) => {
            const p = power.get(d.id);
            const fresh = p && p.w !== null && now - p.at < 15 * 60_000;
            if (fresh && weights.has(d.id)) {
              sum += weights.get(d.id)! * p!.w!;
              any = true;
            }
            return h(
              "li",
              { class: d.disabled ? "tile off" : "tile" },
              h("a", { href: `#/devices/${encodeURIComponent(d.id)}` }, d.name),
              h("output", { "data-device": d.id }, fresh ? watts(p!.w) : p ? "no recent reading" : "no data yet"),
            );
          }),
        );
        total.textContent = any ? watts(sum) : "–";
      };

      main.append(
        h("section", { class: "card live", "aria-labelledby": "live-title" }, h("h2", { id: "live-title" }, "Power now"), total, h("p", { class: "hint" }, "What the home consumes: each watt once"), tiles),
        h("div", { class: "stats" }, today, month, base),
        top,
        alerts,
        h("details", { class: "card" }, h("summary", {}, "Add a device"), addDeviceForm(() => undefined, devices)),
      );
      drawTiles();

      const soon = () => {
        if (timer === undefined) timer = window.setTimeout(() => ((timer = undefined), totals().catch(() => undefined)), 1500);
      };
      const every = window.setInterval(() => (drawTiles(), totals().catch(() => undefined)), 60_000);
      signal.addEventListener("abort", () => (clearInterval(every), clearTimeout(timer)));
      // A new alert, resolved or acknowledged: the open alerts follow.
      stream("/alerts/stream", soon, signal);
      for (const d of devices) {
        stream(
          `/devices/${encodeURIComponent(d.id)}/live`,
          (event, r) => {
            if (event !== "reading") return;
            power.set(d.id, { w: r.power_w, at: r.ts_ms });
            drawTiles();
            soon();
          },
          signal,
        );
      }
    },
  };
}
