// Adding a device: its key is shown once, with ready-to-copy ways to send readings.
import { api } from "./api";
import { clear, copyBlock, errorBox, field, h, select } from "./dom";
import { home } from "./main";

export const DEVICE_TYPES: [string, string][] = [
  ["meter", "Meter"],
  ["plug", "Smart plug"],
  ["solar", "Solar inverter"],
  ["battery", "Battery"],
  ["ev_charger", "EV charger"],
  ["heat_pump", "Heat pump"],
  ["other", "Other"],
];

export const DEVICE_ROLES: [string, string][] = [
  ["consumer", "A load on its own (plug, appliance)"],
  ["grid", "Main meter (grid)"],
  ["production", "Production (solar)"],
  ["battery", "Battery"],
  ["ev_charger", "EV charger"],
  ["sub", "Sub-meter inside another device"],
];

export interface Placed {
  id: string;
  name: string;
  role: string;
  parent_id: string | null;
}

const LOADS = new Set(["consumer", "ev_charger", "sub"]);

/** Each device's factor in the home's consumption: the same formula as the server's
 * (src/energy_tracker/core/consumption.py, Layout.weights), for the live power the page sums
 * itself. With a main meter: meter + production - battery, the loads behind it 0; without one,
 * the top-level loads (those not inside another load). */
export function consumptionWeights(devices: Placed[]): Map<string, number> {
  const roles = new Map(devices.map((d) => [d.id, d.role]));
  const metered = devices.some((d) => d.role === "grid");
  const weights = new Map<string, number>();
  for (const d of devices) {
    if (metered) {
      if (d.role === "grid" || d.role === "production") weights.set(d.id, 1);
      if (d.role === "battery") weights.set(d.id, -1);
    } else if (LOADS.has(d.role) && !(d.parent_id && LOADS.has(roles.get(d.parent_id) ?? ""))) {
      weights.set(d.id, 1);
    }
  }
  return weights;
}

/** The role and parent inputs of a device form; `others` are the devices it may sit inside. */
export function placementFields(others: Placed[], role = "consumer", parent: string | null = null): { role: HTMLSelectElement; parent: HTMLSelectElement; row: HTMLElement } {
  const roleInput = select("role", DEVICE_ROLES, role);
  const parentInput = select("parent_id", [["", "None (top level)"], ...others.filter((d) => d.role === "grid" || LOADS.has(d.role)).map((d): [string, string] => [d.id, d.name])], parent ?? "");
  const row = h("div", { class: "row" }, field("Role", roleInput, "What it measures: loads behind a main meter break its total down and never add to it"), field("Inside", parentInput, "The meter or circuit it sits behind"));
  return { role: roleInput, parent: parentInput, row };
}

export function keyExamples(device: { id: string; api_key: string }): HTMLElement {
  const origin = location.origin;
  const id = device.id;
  const key = device.api_key;
  const now = "$(date -u +%Y-%m-%dT%H:%M:%SZ)";
  return h(
    "section",
    { class: "card key", "aria-labelledby": "key-title" },
    h("h3", { id: "key-title" }, "The device key: shown only this once"),
    h("p", {}, "Copy it now. Only its hash is stored; if you lose it, rotate the key on the device page."),
    copyBlock("Device key", key),
    copyBlock(
      "Send a reading with curl",
      `curl -s ${origin}/api/v1/readings -H 'x-device-key: ${key}' \\\n  -H 'content-type: application/json' \\\n  -d '{"device_id":"${id}","ts":"'${now}'","power_w":1200}'`,
    ),
    copyBlock(
      "MQTT, our JSON (topic et/<device id>/readings)",
      `mosquitto_pub -t 'et/${id}/readings' -m '{"device_id":"${id}","ts":"'${now}'","power_w":1200}'`,
    ),
    copyBlock(
      "MQTT from a Shelly (Gen2 script)",
      `MQTT.publish("et/${id}/readings", JSON.stringify(Shelly.getComponentStatus("switch:0")));`,
    ),
    copyBlock(
      "MQTT from Tasmota (set the device's metadata, then point its telemetry at the broker)",
      `curl -s -X PATCH ${origin}/api/v1/devices/${id} -H "authorization: Bearer $TOKEN" \\\n  -H 'content-type: application/json' -d '{"metadata":{"tasmota_topic":"<tasmota topic>"}}'`,
    ),
    copyBlock(
      "Import history from a CSV (columns ts, power_w and/or energy_wh)",
      `energy-tracker import meter.csv --device ${id}`,
    ),
  );
}

/** The form that adds a device; `done` gets the created device (with its key). */
export function addDeviceForm(done: (device: any) => void, others: Placed[] = []): HTMLElement {
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 200 });
  const type = select("type", DEVICE_TYPES, "plug");
  const placed = placementFields(others);
  const tz = h("input", { type: "text", name: "timezone", placeholder: "the household's" });
  const out = h("div", {});
  return h(
    "form",
    {
      class: "card",
      "aria-labelledby": "add-device",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        clear(out);
        try {
          const device = await api("POST", "/devices", { name: name.value, type: type.value, timezone: tz.value || null, household_id: home().id, role: placed.role.value, parent_id: placed.parent.value || null });
          clear(out, keyExamples(device));
          done(device);
        } catch (err) {
          clear(out, errorBox(err));
        }
      },
    },
    h("h2", { id: "add-device" }, "Add a device"),
    h("div", { class: "row" }, field("Name", name), field("Type", type), field("Time zone (optional)", tz, "IANA name, e.g. Europe/Berlin")),
    placed.row,
    h("button", { type: "submit" }, "Add device"),
    out,
  );
}
