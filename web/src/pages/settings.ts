// Settings: profile, time zone, currency, the tariff (flat, or time-of-use drawn and edited as a
// 24-hour strip), standing charge and export price; access tokens; and, for an admin, the users.
import { api } from "../api";
import { clear, errorBox, field, h, say, select } from "../dom";
import { loadMe, session, type Page } from "../main";
import { accessTokens } from "../tokens";

/** Hourly prices back to bands: consecutive hours at one price make one band. */
export function bandsOf(prices: number[]): { from_hour: number; to_hour: number; price_per_kwh: number }[] {
  const bands: { from_hour: number; to_hour: number; price_per_kwh: number }[] = [];
  prices.forEach((p, hour) => {
    const last = bands[bands.length - 1];
    if (last && last.price_per_kwh === p) last.to_hour = hour + 1;
    else bands.push({ from_hour: hour, to_hour: hour + 1, price_per_kwh: p });
  });
  return bands;
}

function hourly(tariff: any): number[] {
  const prices: number[] = new Array(24).fill(tariff?.price_per_kwh ?? 0.3);
  for (const b of tariff?.bands ?? []) {
    const hours = (b.to_hour - b.from_hour + 24) % 24 || 24;
    for (let i = 0; i < hours; i++) prices[(b.from_hour + i) % 24] = b.price_per_kwh;
  }
  return prices;
}

export function settingsPage(): Page {
  return {
    title: "Settings",
    async render(main) {
      const me = await loadMe();
      const name = h("input", { type: "text", value: me.name ?? "", autocomplete: "name" });
      const tz = h("input", { type: "text", value: me.timezone, required: true });
      const currency = h("input", { type: "text", value: me.currency, required: true, pattern: "[A-Z]{3}", maxlength: 3 });
      const t = me.tariff ?? { type: "flat", price_per_kwh: 0.3 };
      const kind = select("tariff type", [["flat", "Flat: one price"], ["tou", "Time of use: price by hour"]], t.type);
      const flat = h("input", { type: "number", step: "0.0001", min: 0, value: t.price_per_kwh ?? 0.3 });
      const standing = h("input", { type: "number", step: "0.0001", min: 0, value: t.standing_charge_per_day ?? "" });
      const exportPrice = h("input", { type: "number", step: "0.0001", min: 0, value: t.export_price_per_kwh ?? "" });
      const prices = hourly(t);
      const strip = h("div", { class: "strip", role: "group", "aria-label": "Price per kWh for each local hour" });
      const drawStrip = () => {
        const max = Math.max(...prices, 0.0001);
        clear(
          strip,
          ...prices.map((p, hr) => {
            const input = h("input", { type: "number", step: "0.0001", min: 0, value: p, "aria-label": `Price from ${hr}:00 to ${hr + 1}:00` });
            input.addEventListener("change", () => ((prices[hr] = Number(input.value)), drawStrip()));
            const bar = h("span", { class: "bar" });
            bar.style.height = `${Math.round((p / max) * 40) + 4}px`;
            return h("div", { class: "hour" }, bar, input, h("span", { class: "h" }, String(hr).padStart(2, "0")));
          }),
        );
      };
      drawStrip();
      const touBox = h("div", {}, h("p", {}, "Prices by local hour (00 = midnight to 1 am). Bars show the relative price."), strip);
      const flatBox = field(`Price per kWh (${me.currency})`, flat);
      const showKind = () => {
        touBox.hidden = kind.value !== "tou";
        flatBox.hidden = kind.value !== "flat";
      };
      kind.addEventListener("change", showKind);
      showKind();
      const out = h("div", {});
      clear(
        main,
        h("h1", {}, "Settings"),
        h(
          "form",
          {
            class: "card",
            onsubmit: async (e: Event) => {
              e.preventDefault();
              const extra: any = {};
              if (standing.value !== "") extra.standing_charge_per_day = Number(standing.value);
              if (exportPrice.value !== "") extra.export_price_per_kwh = Number(exportPrice.value);
              const tariff = kind.value === "flat" ? { type: "flat", price_per_kwh: Number(flat.value), ...extra } : { type: "tou", bands: bandsOf(prices), ...extra };
              try {
                await api("PATCH", "/users/me", { name: name.value || null, timezone: tz.value, currency: currency.value, tariff });
                await loadMe();
                clear(out, h("p", { role: "status" }, "Saved. Costs from now on use the new tariff; history keeps the prices it was computed with."));
                say("Settings saved");
              } catch (err) {
                clear(out, errorBox(err));
              }
            },
          },
          h("h2", {}, "Profile"),
          h("div", { class: "row" }, field("Name", name), field("Time zone", tz, "IANA name, e.g. Europe/Berlin"), field("Currency", currency, "ISO code, e.g. EUR")),
          h("h2", {}, "Tariff"),
          field("Tariff type", kind),
          flatBox,
          touBox,
          h("div", { class: "row" }, field(`Standing charge per day (${me.currency})`, standing, "Optional"), field(`Export price per kWh (${me.currency})`, exportPrice, "Optional: what exported energy earns")),
          h("button", { type: "submit" }, "Save settings"),
          out,
        ),
      );
      main.append(await accessTokens(me.timezone));
      if (session.me?.role === "admin") main.append(await adminUsers());
    },
  };
}

async function adminUsers(): Promise<HTMLElement> {
  const box = h("section", { class: "card", "aria-labelledby": "admin-h" });
  const draw = async () => {
    const users: any[] = await api("GET", "/users?limit=1000");
    clear(
      box,
      h("h2", { id: "admin-h" }, "Users (admin)"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", {}, "Every account"),
          h("thead", {}, h("tr", {}, ...["e-mail", "role", "disabled", ""].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            ...users.map((u) => {
              const role = select("role", [["user", "user"], ["admin", "admin"]], u.role);
              role.setAttribute("aria-label", `Role of ${u.email}`);
              const off = h("input", { type: "checkbox", checked: u.disabled, "aria-label": `${u.email} disabled` });
              const save = h("button", {
                type: "button",
                class: "secondary",
                onclick: async () => {
                  try {
                    await api("PATCH", `/users/${u.id}`, { role: role.value, disabled: off.checked });
                    say(`Saved ${u.email}`);
                    draw();
                  } catch (err) {
                    box.append(errorBox(err));
                  }
                },
              }, "Save");
              return h("tr", {}, h("th", { scope: "row" }, u.email), h("td", {}, role), h("td", {}, off), h("td", {}, save));
            }),
          ),
        ),
      ),
    );
  };
  await draw();
  return box;
}
