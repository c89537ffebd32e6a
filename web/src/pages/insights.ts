// Insights: the next days' forecast with its 80 % band, odd days and hours, baseload and what it
// costs a year, this month against the last.
import { api } from "../api";
import { Chart } from "../chart";
import { clear, h, kwh, localTime, money, watts } from "../dom";
import { home, inHome, type Page } from "../main";

const EVENT_NAMES: Record<string, string> = {
  stuck_on: "A load stuck on",
  baseload_step: "Always-on level stepped up",
  spike: "A spike",
  unusual_hour: "Use at an unusual hour",
  silence: "No readings",
};

export function insightsPage(): Page {
  return {
    title: "Insights",
    async render(main) {
      const me = home();
      const hh = { timezone: me.timezone, currency: me.currency };
      const [summary, forecast, anomalies] = await Promise.all([api("GET", inHome("/insights/summary")), api("GET", inHome("/insights/forecast")), api("GET", inHome("/insights/anomalies"))]);
      clear(main, h("h1", {}, "Insights"));
      const b = summary.baseload;
      const mtd = summary.month_to_date;
      const last = summary.last_month;
      main.append(
        h(
          "div",
          { class: "stats" },
          h("div", { class: "stat" }, h("h2", {}, "Baseload"), b ? [h("p", { class: "big" }, watts(b.power_w)), h("p", {}, `Always on: ${kwh(b.yearly_kwh, 0)} and ${money(b.yearly_cost, hh)} a year${b.share_pct !== null ? `, ${b.share_pct.toFixed(0)} % of your use` : ""}.`)].reduce((f, n) => (f.append(n), f), document.createDocumentFragment()) : h("p", {}, "Needs an hour of data in the last 14 days.")),
          h("div", { class: "stat" }, h("h2", {}, "This month vs last"), mtd ? h("p", {}, `${kwh(mtd.energy_kwh, 1)} (${money(mtd.cost, hh)}) so far over ${mtd.days} days; last month ${last ? `${kwh(last.energy_kwh, 1)} (${money(last.cost, hh)})` : "no data"}${summary.change_pct !== null ? `; ${summary.change_pct >= 0 ? "+" : ""}${summary.change_pct.toFixed(1)} % per day` : ""}.`) : h("p", {}, "No data this month yet.")),
          h("div", { class: "stat" }, h("h2", {}, "Month forecast"), forecast.month ? h("p", {}, `${kwh(forecast.month.energy_kwh, 0)} (80 %: ${kwh(forecast.month.energy_kwh_low, 0)}–${kwh(forecast.month.energy_kwh_high, 0)}), ${money(forecast.month.cost, hh)}`) : h("p", {}, "Needs a full day of data.")),
        ),
      );
      if (forecast.days.length) {
        const xs = forecast.days.map((d: any) => Date.parse(`${d.day}T12:00:00Z`) / 1000);
        const chart = new Chart({
          title: "Next 7 days: forecast energy per day",
          xs,
          series: [
            { label: "Forecast (kWh)", values: forecast.days.map((d: any) => d.energy_kwh), kind: "bars" },
            { label: "80 % low (kWh)", values: forecast.days.map((d: any) => d.low), color: "#6b7280" },
            { label: "80 % high (kWh)", values: forecast.days.map((d: any) => d.high), color: "#6b7280" },
            { label: `Cost (${me.currency})`, values: forecast.days.map((d: any) => d.cost), color: "#b35900", right: true },
          ],
          tz: me.timezone,
          yLabel: "energy (kWh)",
          barsCentred: true,
          y2Label: `cost (${me.currency})`,
          summary: `Forecast for the next 7 days (80 % range): ${forecast.days.map((d: any) => `${d.day} ${d.energy_kwh.toFixed(1)} kWh (${d.low.toFixed(1)}–${d.high.toFixed(1)})`).join(", ")}.`,
          formatX: (s) => localTime(s * 1000, me.timezone, { weekday: "short", day: "numeric", month: "short" }),
        });
        main.append(h("section", { class: "card" }, h("h2", {}, "Forecast"), chart.el));
      } else main.append(h("section", { class: "card empty" }, h("h2", {}, "Forecast"), h("p", {}, "A forecast needs history: send readings for a day or import a CSV.")));
      main.append(
        h(
          "section",
          { class: "card" },
          h("h2", {}, "Anomalies"),
          anomalies.days.length || anomalies.events.length
            ? h(
                "ul",
                {},
                ...anomalies.days.map((d: any) => h("li", {}, `${d.day}: ${kwh(d.energy_kwh, 1)}, usually ${kwh(d.expected_kwh, 1)} (${d.direction})`)),
                ...anomalies.events.map((a: any) => h("li", {}, `${EVENT_NAMES[a.kind] ?? a.kind}, ${localTime(Date.parse(a.start), me.timezone, { dateStyle: "medium", timeStyle: "short" })}, ${a.hours} h: ${kwh(a.energy_kwh, 2)}, usually ${kwh(a.expected_kwh, 2)}`)),
              )
            : h("p", {}, `Nothing unusual since ${anomalies.since}.`),
        ),
      );
    },
  };
}
