// The dashboard: a hash router over the pages, the signed-in household, and the navigation.
import "./style.css";
import { api, refresh, signIn, signOut, signedIn } from "./api";
import { clear, errorBox, field, h, say } from "./dom";
import { alertsPage } from "./pages/alerts";
import { devicePage } from "./pages/device";
import { homePage } from "./pages/home";
import { insightsPage } from "./pages/insights";
import { settingsPage } from "./pages/settings";

export interface Me {
  id: string;
  email: string;
  name: string | null;
  role: string;
  timezone: string;
  currency: string;
  tariff: any;
}

export interface Page {
  title: string;
  render(main: HTMLElement, signal: AbortSignal): Promise<void> | void;
}

/** A household of the caller's, with their role in it. */
export interface Home {
  id: string;
  name: string;
  role: string | null;
  timezone: string;
  currency: string;
  tariff: any;
  country: string | null;
}

export const session: { me: Me | null; homes: Home[]; home: Home | null } = { me: null, homes: [], home: null };
const HOME_KEY = "et_household";

export async function loadMe(): Promise<Me> {
  const [me, homes] = await Promise.all([api<Me>("GET", "/users/me"), api<{ items: Home[] }>("GET", "/households")]);
  session.me = me;
  session.homes = homes.items;
  const wanted = session.home?.id ?? localStorage.getItem(HOME_KEY);
  session.home = homes.items.find((x) => x.id === wanted) ?? homes.items[0] ?? null;
  return me;
}

/** The household the pages show (the switcher's choice; your own at first). */
export function home(): Home {
  if (!session.home) throw new Error("You belong to no household.");
  return session.home;
}

/** `path` narrowed to the household the pages show. */
export function inHome(path: string): string {
  return `${path}${path.includes("?") ? "&" : "?"}household_id=${encodeURIComponent(home().id)}`;
}

function switcher(): HTMLElement | null {
  if (session.homes.length < 2) return null;
  const s = h("select", { name: "household", "aria-label": "Household" });
  for (const x of session.homes) s.append(h("option", { value: x.id, selected: x.id === session.home?.id }, `${x.name} (${x.role})`));
  s.addEventListener("change", () => {
    session.home = session.homes.find((x) => x.id === s.value) ?? session.home;
    localStorage.setItem(HOME_KEY, s.value);
    say(`Showing ${session.home?.name}`);
    redraw();
  });
  return s;
}

const main = document.getElementById("main")!;
const top = document.getElementById("top")!;
let current: AbortController | null = null;

const NAV: [string, string][] = [
  ["#/", "Home"],
  ["#/alerts", "Alerts"],
  ["#/insights", "Insights"],
  ["#/settings", "Settings"],
];

function header(): void {
  const here = location.hash || "#/";
  clear(
    top,
    h(
      "nav",
      { "aria-label": "Main" },
      h("a", { href: "#/", class: "brand" }, "⚡ Energy"),
      ...(signedIn()
        ? [
            h(
              "ul",
              {},
              ...NAV.map(([href, text]) =>
                h("li", {}, h("a", { href, "aria-current": (here === href || (href !== "#/" && here.startsWith(href))) ? "page" : null }, text)),
              ),
            ),
            switcher(),
            h(
              "button",
              {
                type: "button",
                class: "secondary",
                onclick: async () => {
                  await signOut();
                  session.me = null;
                  session.home = null;
                  location.hash = "#/signin";
                  say("Signed out");
                },
              },
              "Sign out",
            ),
          ]
        : []),
    ),
  );
}

function authPage(kind: "signin" | "register"): Page {
  return {
    title: kind === "signin" ? "Sign in" : "Create an account",
    render(el) {
      const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
      const password = h("input", {
        type: "password",
        name: "password",
        autocomplete: kind === "signin" ? "current-password" : "new-password",
        required: true,
        minlength: kind === "register" ? 10 : null,
      });
      const name = h("input", { type: "text", name: "name", autocomplete: "name" });
      const out = h("div", {});
      const form = h(
        "form",
        {
          class: "card narrow",
          onsubmit: async (e: Event) => {
            e.preventDefault();
            clear(out);
            try {
              if (kind === "register")
                await api("POST", "/auth/register", { email: email.value, password: password.value, name: name.value || null });
              await signIn(email.value, password.value);
              await loadMe();
              location.hash = "#/";
            } catch (err) {
              clear(out, errorBox(err));
            }
          },
        },
        h("h1", {}, kind === "signin" ? "Sign in" : "Create an account"),
        kind === "register" ? field("Name (optional)", name) : null,
        field("E-mail", email),
        field("Password", password, kind === "register" ? "At least 10 characters." : undefined),
        out,
        h("button", { type: "submit" }, kind === "signin" ? "Sign in" : "Create account"),
        h(
          "p",
          {},
          kind === "signin"
            ? h("a", { href: "#/register" }, "No account yet? Create one")
            : h("a", { href: "#/signin" }, "Have an account? Sign in"),
        ),
      );
      clear(el, form);
      email.focus();
    },
  };
}

function route(hash: string): Page {
  const [, first, second] = hash.replace(/^#/, "").split("/");
  if (first === "signin") return authPage("signin");
  if (first === "register") return authPage("register");
  if (first === "devices" && second) return devicePage(decodeURIComponent(second));
  if (first === "alerts") return alertsPage();
  if (first === "insights") return insightsPage();
  if (first === "settings") return settingsPage();
  return homePage();
}

async function show(): Promise<void> {
  current?.abort();
  current = new AbortController();
  const hash = location.hash || "#/";
  const open = /^#\/(signin|register)/.test(hash);
  if (!signedIn() && !open && !(await refresh())) {
    location.hash = "#/signin";
    return;
  }
  if (signedIn() && !session.me) {
    try {
      await loadMe();
    } catch {
      location.hash = "#/signin";
      return;
    }
  }
  header();
  const page = route(hash);
  document.title = `${page.title} · Home Energy Tracker`;
  clear(main, h("p", {}, "Loading…"));
  try {
    await page.render(main, current.signal);
  } catch (err) {
    clear(main, h("h1", {}, page.title), errorBox(err));
  }
  // Keyboard and screen-reader users land on the new page (unless it focused a field itself).
  if (!main.contains(document.activeElement) || document.activeElement === main) main.focus({ preventScroll: true });
}

/** Draw the current page again (after a change that it shows, such as a first device). */
export function redraw(): void {
  void show();
}

window.addEventListener("hashchange", show);
show();
