// Settings → Access tokens: make a personal access token (shown once, with a copy button and
// the Home Assistant sensor that reads today's kWh with it), list them with their last use,
// revoke one. Only a password sign-in may do this, which the page always is.
import { api } from "./api";
import { clear, copyBlock, errorBox, field, h, localTime, say, select } from "./dom";

interface AccessToken {
  id: string;
  name: string;
  scope: "read" | "write";
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  token?: string;
}

const EXPIRIES: [string, string][] = [
  ["30", "30 days"],
  ["90", "90 days"],
  ["365", "1 year"],
  ["", "Never"],
];

/** The README's Home Assistant REST sensor, with this origin, the household shown and the new
 * token filled in. */
export function homeAssistantSensor(origin: string, householdId: string, token: string): string {
  return [
    "sensor:",
    "  - platform: rest",
    "    name: Home energy today",
    "    unique_id: home_energy_tracker_today",
    `    resource: ${origin}/api/v1/usage?granularity=day&from=today&household_id=${householdId}`,
    "    headers:",
    `      Authorization: Bearer ${token}`,
    `    value_template: "{{ value_json['items'] | map(attribute='energy_kwh') | sum | round(3) }}"`,
    "    unit_of_measurement: kWh",
    "    device_class: energy",
    "    state_class: total_increasing",
    "    scan_interval: 300",
  ].join("\n");
}

function when(iso: string | null, tz: string, none: string): string {
  if (iso === null) return none;
  return localTime(Date.parse(iso), tz, { dateStyle: "medium", timeStyle: "short" });
}

export async function accessTokens(household: { id: string; timezone: string }): Promise<HTMLElement> {
  const tz = household.timezone;
  const box = h("section", { class: "card", "aria-labelledby": "tokens-h" });
  const name = h("input", { type: "text", name: "token-name", required: true, maxlength: 200, placeholder: "Home Assistant" });
  const scope = select("scope", [["read", "Read only"], ["write", "Read and write"]], "read");
  const expiry = select("expiry", EXPIRIES, "365");
  const shown = h("div", {});
  const list = h("div", {});

  const drawList = async () => {
    const tokens: AccessToken[] = await api("GET", "/users/me/tokens");
    if (!tokens.length) {
      clear(list, h("p", {}, "No access tokens yet."));
      return;
    }
    clear(
      list,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "tokens" },
          h("caption", {}, "Your access tokens (never shown again; only their hashes are kept)"),
          h("thead", {}, h("tr", {}, ...["name", "scope", "created", "expires", "last used", ""].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            ...tokens.map((t) => {
              const expired = t.expires_at !== null && Date.parse(t.expires_at) <= Date.now();
              const revoke = h("button", {
                type: "button",
                class: "secondary",
                "aria-label": `Revoke ${t.name}`,
                onclick: async () => {
                  if (!confirm(`Revoke the token ${t.name}? Whatever uses it stops at once.`)) return;
                  try {
                    await api("DELETE", `/users/me/tokens/${t.id}`);
                    say(`Revoked ${t.name}`);
                    await drawList();
                  } catch (err) {
                    list.append(errorBox(err));
                  }
                },
              }, "Revoke");
              return h(
                "tr",
                {},
                h("th", { scope: "row" }, t.name),
                h("td", {}, t.scope),
                h("td", {}, when(t.created_at, tz, "")),
                h("td", {}, expired ? `expired ${when(t.expires_at, tz, "")}` : when(t.expires_at, tz, "never")),
                h("td", {}, when(t.last_used_at, tz, "never")),
                h("td", {}, revoke),
              );
            }),
          ),
        ),
      ),
    );
  };

  clear(
    box,
    h("h2", { id: "tokens-h" }, "Access tokens"),
    h("p", {}, "For scripts, a wall display or Home Assistant: a token to use instead of your password, as ", h("code", {}, "Authorization: Bearer etp_…"), ". A read token can change nothing."),
    h(
      "form",
      {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          clear(shown);
          try {
            const body: Record<string, unknown> = { name: name.value, scope: scope.value };
            if (expiry.value !== "") body.expires_in_days = Number(expiry.value);
            const made: AccessToken = await api("POST", "/users/me/tokens", body);
            clear(
              shown,
              h(
                "section",
                { class: "card key", "aria-labelledby": "token-title" },
                h("h3", { id: "token-title" }, `The token ${made.name}: shown only this once`),
                h("p", {}, "Copy it now. Only its hash is stored; if you lose it, revoke it and make another."),
                copyBlock("Access token", made.token ?? ""),
                copyBlock("Home Assistant sensor: today's kWh (configuration.yaml)", homeAssistantSensor(location.origin, household.id, made.token ?? "")),
              ),
            );
            name.value = "";
            say(`Token ${made.name} created`);
            await drawList();
          } catch (err) {
            clear(shown, errorBox(err));
          }
        },
      },
      h("div", { class: "row" }, field("Token name", name), field("Scope", scope, "Read: usage, readings, live streams, alerts. Write: also devices, rules, readings"), field("Expires", expiry)),
      h("button", { type: "submit" }, "Create token"),
    ),
    shown,
    list,
  );
  await drawList();
  return box;
}
