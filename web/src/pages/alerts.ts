// Alerts: the list, live over /alerts/stream, acknowledging, each alert's notification attempts;
// the rule editor (every metric, period, thresholds, hysteresis, for, cooldown, channels) with a
// preview of when the draft would have fired over the last 7 days of its device's data (kept up
// to date while a rule is edited).
import { api, stream } from "../api";
import { clear, errorBox, field, h, localTime, say, select } from "../dom";
import { home, inHome, type Page } from "../main";

const UNITS: Record<string, string> = { power_w: "W", energy_kwh: "kWh", cost: "currency", silence: "seconds", anomaly: "(score)" };

export function alertsPage(): Page {
  return {
    title: "Alerts",
    async render(main, signal) {
      const me = home();
      const devices: any[] = await api("GET", inHome("/devices?limit=1000"));
      const names = new Map(devices.map((d) => [d.id, d.name]));
      const list = h("section", { class: "card", "aria-labelledby": "alerts-h" });
      const rules = h("section", { class: "card", "aria-labelledby": "rules-h" });
      const editor = h("section", { class: "card", "aria-labelledby": "editor-h" });
      clear(main, h("h1", {}, "Alerts"), list, rules, editor);
      const when = (iso: string | null) => (iso ? localTime(Date.parse(iso), me.timezone, { dateStyle: "medium", timeStyle: "medium" }) : "–");

      // Alerts whose notifications are open: a live redraw (any alert's transition) keeps them open.
      const opened = new Set<string>();
      const seen = new Map<string, HTMLElement>(); // the attempts last shown, per opened alert
      const drawAlerts = async () => {
        const data = await api("GET", inHome("/alerts?limit=100"));
        clear(
          list,
          h("h2", { id: "alerts-h" }, "Alerts"),
          data.items.length
            ? h(
                "ul",
                { class: "alerts", "data-testid": "alert-list" },
                ...data.items.map((a: any) =>
                  h(
                    "li",
                    { class: `alert sev-${a.severity} ${a.state}` },
                    h("strong", {}, a.rule_name ?? "alert"),
                    ` on ${a.device_id ? names.get(a.device_id) ?? a.device_id : "all devices"}: `,
                    h("span", { class: "state" }, a.state + (a.acknowledged ? ", acknowledged" : "")),
                    h("br"),
                    `${a.severity} · value ${a.value} (peak ${a.peak_value}, threshold ${a.threshold}) · since ${when(a.started_at)}${a.resolved_at ? ` · resolved ${when(a.resolved_at)}` : ""}`,
                    a.acknowledged
                      ? null
                      : h("button", { type: "button", onclick: async () => (await api("POST", `/alerts/${a.id}/ack`), say("Alert acknowledged"), drawAlerts()) }, "Acknowledge"),
                    a.deliveries.length
                      ? h(
                          "details",
                          {
                            open: opened.has(a.id),
                            ontoggle: async (e: Event) => {
                              const d = e.target as HTMLDetailsElement;
                              if (d.open) opened.add(a.id);
                              else opened.delete(a.id);
                              if (!d.open || d.dataset.loaded) return;
                              d.dataset.loaded = "1";
                              const full = await api("GET", `/alerts/${a.id}`);
                              const fresh = h("ul", {}, ...full.deliveries.flatMap((dl: any) => [
                                h("li", {}, `${dl.channel} to ${dl.target} (${dl.event}): ${dl.status}, ${dl.attempts} attempt(s)${dl.last_error ? `, last error: ${dl.last_error}` : ""}`),
                                ...(dl.history ?? []).map((t: any) => h("li", { class: "attempt" }, `attempt ${t.attempt} at ${when(t.at)}: ${t.ok ? "ok" : "failed"} ${t.status_code ?? ""} ${t.error ?? ""}`)),
                              ]));
                              d.querySelector("ul")?.remove(); // the copy shown while this was asked for
                              d.append(fresh);
                              seen.set(a.id, fresh);
                            },
                          },
                          h("summary", {}, `Notifications (${a.deliveries.length})`),
                          // Redrawn open, it shows what it showed until the fresh answer comes:
                          // the page must not jump under the pointer of someone about to click.
                          opened.has(a.id) ? (seen.get(a.id)?.cloneNode(true) as HTMLElement | undefined) ?? null : null,
                        )
                      : null,
                  ),
                ),
              )
            : h("p", { class: "empty" }, "No alerts. Create a rule below; alerts appear here as they fire."),
        );
      };

      const drawRules = async () => {
        const data = await api("GET", inHome("/alert-rules"));
        clear(
          rules,
          h("h2", { id: "rules-h" }, "Rules"),
          data.items.length
            ? h("ul", {}, ...data.items.map((r: any) =>
                h(
                  "li",
                  {},
                  h("strong", {}, r.name),
                  ` ${r.metric}${r.period !== "instant" ? ` per ${r.period}` : ""} ${r.op === "gt" ? ">" : "<"} ${r.threshold} ${UNITS[r.metric]} on ${r.device_id ? names.get(r.device_id) ?? r.device_id : "all devices"} `,
                  h("button", { type: "button", class: "secondary", onclick: () => drawEditor(r) }, "Edit"),
                  " ",
                  h("button", { type: "button", class: "secondary", onclick: async () => { if (confirm(`Delete rule ${r.name} and its alerts?`)) { await api("DELETE", `/alert-rules/${r.id}`); drawRules(); drawAlerts(); } } }, "Delete"),
                ),
              ))
            : h("p", { class: "empty" }, devices.length ? "No rules yet." : "Add a device first, then a rule for it."),
        );
      };

      const drawEditor = (rule: any = null) => {
        const fixed = rule !== null;
        const name = h("input", { type: "text", required: true, value: rule?.name ?? "" });
        const device = select("device", [["", "All my devices (summed)"], ...devices.map((d): [string, string] => [d.id, d.name])], rule?.device_id ?? devices[0]?.id ?? "");
        const metric = select("metric", [["power_w", "Power (W)"], ["energy_kwh", "Energy so far (kWh)"], ["cost", "Cost so far"], ["silence", "Silence (no reading for N s)"], ["anomaly", "Anomaly (score above N)"]], rule?.metric ?? "power_w");
        const period = select("period", [["instant", "instant"], ["hour", "this hour"], ["day", "today"], ["month", "this month"]], rule?.period ?? "instant");
        const op = select("op", [["gt", "above"], ["lt", "below"]], rule?.op ?? "gt");
        const threshold = h("input", { type: "number", step: "any", required: true, value: rule?.threshold ?? "" });
        const clearT = h("input", { type: "number", step: "any", value: rule?.clear_threshold ?? "" });
        const forS = h("input", { type: "number", min: 0, value: rule?.for_s ?? 0 });
        const cooldown = h("input", { type: "number", min: 0, value: rule?.cooldown_s ?? 0 });
        const severity = select("severity", [["info", "info"], ["warning", "warning"], ["critical", "critical"]], rule?.severity ?? "warning");
        for (const el of [device, metric, period, op]) el.disabled = fixed;
        const channels = h("div", { class: "channels" });
        // A rule's channels are sent back only when changed here: the API never shows a webhook's
        // secret, so an untouched channel would come back without it.
        let channelsChanged = !fixed;
        channels.addEventListener("input", () => (channelsChanged = true));
        const addChannel = (c: any = { type: "webhook" }, changed = true) => {
          channelsChanged ||= changed;
          const type = select("channel type", [["webhook", "Webhook"], ["email", "E-mail"]], c.type);
          const target = h("input", { type: c.type === "email" ? "email" : "url", value: c.url ?? c.to ?? "", required: true });
          const secret = h("input", { type: "password", autocomplete: "off", minlength: 8, placeholder: fixed ? "(kept unless this channel changes)" : "" });
          const row = h("fieldset", { class: "channel" }, h("legend", {}, "Channel"), field("Type", type), field("URL or address", target), field("Webhook secret (signs each body)", secret), h("button", { type: "button", class: "secondary", onclick: () => ((channelsChanged = true), row.remove()) }, "Remove channel"));
          type.addEventListener("change", () => (target.type = type.value === "email" ? "email" : "url"));
          (row as any).value = () => (type.value === "email" ? { type: "email", to: target.value } : { type: "webhook", url: target.value, secret: secret.value });
          channels.append(row);
        };
        (rule?.channels ?? []).forEach((c: any) => addChannel(c, false));
        const unit = h("span", {}, UNITS[metric.value]);
        metric.addEventListener("change", () => {
          unit.textContent = UNITS[metric.value];
          period.value = ["power_w", "silence", "anomaly"].includes(metric.value) ? "instant" : period.value === "instant" ? "day" : period.value;
        });
        const out = h("div", { "aria-live": "polite" });
        const body = () => ({
          name: name.value,
          device_id: device.value || null,
          metric: metric.value,
          period: period.value,
          op: op.value,
          threshold: Number(threshold.value),
          clear_threshold: clearT.value === "" ? null : Number(clearT.value),
          for_s: Number(forS.value || 0),
          cooldown_s: Number(cooldown.value || 0),
          severity: severity.value,
          channels: [...channels.querySelectorAll("fieldset")].map((f: any) => f.value()),
        });
        // Shown at once for a rule being edited, and again after each change to what decides
        // when it fires (the last answer asked for wins); for a new rule, from "Preview" on.
        let asked = 0;
        const preview = async () => {
          const mine = ++asked;
          try {
            const p = await api("POST", "/alert-rules/preview", { ...body(), channels: [] });
            if (mine !== asked) return;
            clear(
              out,
              h("h3", {}, "Preview: the last 7 days"),
              h("p", { "data-testid": "preview" }, `${p.alerts.length} alert(s) from ${p.observations} observations.`),
              p.alerts.length ? h("ul", {}, ...p.alerts.map((a: any) => h("li", {}, `${when(a.started_at)} → ${a.resolved_at ? when(a.resolved_at) : "still firing"}, peak ${a.peak_value}`))) : null,
            );
          } catch (err) {
            if (mine === asked) clear(out, errorBox(err));
          }
        };
        let pending: number | undefined;
        const again = () => {
          if (!fixed && !out.hasChildNodes()) return;
          clearTimeout(pending);
          pending = window.setTimeout(preview, 300);
        };
        for (const el of [device, metric, period, op, threshold, clearT, forS, cooldown]) {
          el.addEventListener("input", again);
          el.addEventListener("change", again);
        }
        clear(
          editor,
          h(
            "form",
            {
              onsubmit: async (e: Event) => {
                e.preventDefault();
                clearTimeout(pending); // the preview of a draft being saved is moot
                try {
                  const b: any = body();
                  if (fixed) {
                    for (const k of ["device_id", "metric", "period", "op"]) delete b[k];
                    if (!channelsChanged) delete b.channels;
                    await api("PATCH", `/alert-rules/${rule.id}`, b);
                  } else await api("POST", "/alert-rules", { ...b, household_id: me.id });
                  say("Rule saved");
                  drawEditor();
                  drawRules();
                } catch (err) {
                  clear(out, errorBox(err));
                }
              },
            },
            h("h2", { id: "editor-h" }, fixed ? `Edit rule ${rule.name}` : "New rule"),
            h("div", { class: "row" }, field("Name", name), field("Device", device), field("Watch", metric), field("Period", period)),
            h("div", { class: "row" }, field("Fire when", op), field("Threshold", threshold, "W, kWh, currency or seconds, as watched"), unit, field("Clear at (hysteresis)", clearT, "Optional; default: the threshold")),
            h("div", { class: "row" }, field("For (s)", forS, "Past the threshold this long on end"), field("Cooldown (s)", cooldown, "No new alert this long after one resolves"), field("Severity", severity)),
            h("p", {}, "Every alert also shows here in the app."),
            channels,
            h("button", { type: "button", class: "secondary", onclick: () => addChannel() }, "Add a channel"),
            h("div", { class: "toolbar" }, h("button", { type: "button", class: "secondary", onclick: preview }, "Preview"), h("button", { type: "submit" }, fixed ? "Save rule" : "Create rule"), fixed ? h("button", { type: "button", class: "secondary", onclick: () => drawEditor() }, "Cancel") : null),
            out,
          ),
        );
        if (fixed) {
          name.focus();
          void preview();
        }
      };

      await Promise.all([drawAlerts(), drawRules()]);
      drawEditor();
      // Each transition (firing, resolved, acknowledged) redraws the list.
      stream("/alerts/stream", () => void drawAlerts().then(() => say("Alerts updated")), signal);
    },
  };
}
