// Settings: your name; the household's name, time zone, currency, the tariff (flat, or
// time-of-use drawn and edited as a 24-hour strip), standing charge and export price; its
// members (invite, change a role, remove, leave); your access tokens; and, for an admin, the
// users.
import { api } from "../api";
import { clear, errorBox, field, h, say, select } from "../dom";
import { home, loadMe, redraw, session, type Page } from "../main";
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
      const here = home();
      const owner = here.role === "owner" || me.role === "admin";
      const name = h("input", { type: "text", value: me.name ?? "", autocomplete: "name" });
      const homeName = h("input", { type: "text", value: here.name, required: true });
      const tz = h("input", { type: "text", value: here.timezone, required: true });
      const currency = h("input", { type: "text", value: here.currency, required: true, pattern: "[A-Z]{3}", maxlength: 3 });
      const t = here.tariff ?? { type: "flat", price_per_kwh: 0.3 };
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
      const flatBox = field(`Price per kWh (${here.currency})`, flat);
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
                await api("PATCH", "/users/me", { name: name.value || null });
                if (owner) await api("PATCH", `/households/${here.id}`, { name: homeName.value, timezone: tz.value, currency: currency.value, tariff });
                await loadMe();
                clear(out, h("p", { role: "status" }, "Saved. Costs from now on use the new tariff; history keeps the prices it was computed with."));
                say("Settings saved");
              } catch (err) {
                clear(out, errorBox(err));
              }
            },
          },
          h("h2", {}, "Profile"),
          field("Your name", name),
          h(
            "fieldset",
            { disabled: !owner },
            h("legend", {}, owner ? "Household" : `Household (only its owner changes these; you are a ${here.role})`),
            h("div", { class: "row" }, field("Household name", homeName), field("Time zone", tz, "IANA name, e.g. Europe/Berlin"), field("Currency", currency, "ISO code, e.g. EUR")),
            h("h2", {}, "Tariff"),
            field("Tariff type", kind),
            flatBox,
            touBox,
            h("div", { class: "row" }, field(`Standing charge per day (${here.currency})`, standing, "Optional"), field(`Export price per kWh (${here.currency})`, exportPrice, "Optional: what exported energy earns")),
          ),
          h("button", { type: "submit" }, "Save settings"),
          out,
        ),
      );
      main.append(await members(here.id, me.id, owner));
      main.append(await accessTokens(here));
      if (session.me?.role === "admin") main.append(await adminUsers());
    },
  };
}

const ROLES: [string, string][] = [
  ["owner", "owner: everything"],
  ["member", "member: devices, rules, alerts"],
  ["viewer", "viewer: reads only"],
];

/** The household's members: invite by e-mail, change a role (owner: a transfer), remove, leave. */
async function members(householdId: string, myId: string, owner: boolean): Promise<HTMLElement> {
  const box = h("section", { class: "card", "aria-labelledby": "members-h" });
  const out = h("div", {});
  const act = async (what: () => Promise<unknown>, done: string) => {
    try {
      await what();
      say(done);
      await draw();
    } catch (err) {
      clear(out, errorBox(err));
    }
  };
  const draw = async (): Promise<void> => {
    const detail: any = await api("GET", `/households/${householdId}`);
    const email = h("input", { type: "email", name: "invite-email", required: true, autocomplete: "off" });
    const role = select("invite-role", ROLES.slice(1), "member");
    clear(
      box,
      h("h2", { id: "members-h" }, "Members"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", {}, `Who shares ${detail.name}`),
          h("thead", {}, h("tr", {}, ...["e-mail", "role", "alert e-mails", ""].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            ...detail.members.map((m: any) => {
              const mine = m.user_id === myId;
              const r = select("role", ROLES, m.role);
              r.setAttribute("aria-label", `Role of ${m.email}`);
              r.disabled = !owner;
              r.addEventListener("change", () => act(() => api("PATCH", `/households/${householdId}/members/${m.user_id}`, { role: r.value }), `${m.email} is now ${r.value}`));
              const mail = h("input", { type: "checkbox", checked: m.notify_email, disabled: !(owner || mine), "aria-label": `Alert e-mails to ${m.email}` });
              mail.addEventListener("change", () => act(() => api("PATCH", `/households/${householdId}/members/${m.user_id}`, { notify_email: mail.checked }), "Saved"));
              const remove =
                owner || mine
                  ? h(
                      "button",
                      {
                        type: "button",
                        class: "secondary",
                        // The row names the member; a reader of the button alone hears whom.
                        "aria-label": mine ? "Leave" : `Remove ${m.email}`,
                        onclick: () =>
                          act(async () => {
                            await api("DELETE", `/households/${householdId}/members/${m.user_id}`);
                            if (mine) {
                              await loadMe();
                              redraw();
                            }
                          }, mine ? "You left the household" : `Removed ${m.email}`),
                      },
                      mine ? "Leave" : "Remove",
                    )
                  : null;
              return h("tr", {}, h("th", { scope: "row" }, m.email), h("td", {}, r), h("td", {}, mail), h("td", {}, remove));
            }),
          ),
        ),
      ),
      detail.invitations.length ? h("p", {}, `Invited, not registered yet: ${detail.invitations.map((i: any) => `${i.email} (${i.role})`).join(", ")}`) : null,
      owner
        ? h(
            "form",
            {
              class: "row",
              onsubmit: (e: Event) => {
                e.preventDefault();
                act(async () => {
                  const r: any = await api("POST", `/households/${householdId}/members`, { email: email.value, role: role.value });
                  say(r.status === "joined" ? `${email.value} joined` : `${email.value} invited: registering within 7 days joins`);
                }, "Invited");
              },
            },
            field("Invite by e-mail", email),
            field("Role", role),
            h("button", { type: "submit" }, "Invite"),
          )
        : null,
      out,
    );
  };
  await draw();
  return box;
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
