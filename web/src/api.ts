// Talking to /api/v1. The access token lives in this module's memory only; the refresh token is
// an HttpOnly cookie the page never sees. After a reload the page asks /auth/refresh (with the
// CSRF value from the readable et_csrf cookie) for a new access token.
import { fetchEventSource } from "@microsoft/fetch-event-source";

const API = "/api/v1";
let access: string | null = null;
let refreshing: Promise<boolean> | null = null;

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public details: unknown = null,
  ) {
    super(message);
  }
}

function csrf(): string | null {
  const m = document.cookie.match(/(?:^|;\s*)et_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : null;
}

export function signedIn(): boolean {
  return access !== null;
}

/** A new access token from the session cookie; false when there is no session. */
export function refresh(): Promise<boolean> {
  refreshing ??= (async () => {
    const token = csrf();
    if (!token) return false;
    const r = await fetch(`${API}/auth/refresh`, {
      method: "POST",
      headers: { "x-csrf-token": token },
      credentials: "same-origin",
    });
    if (!r.ok) return false;
    access = (await r.json()).access_token;
    return true;
  })().finally(() => (refreshing = null));
  return refreshing;
}

async function errorOf(r: Response): Promise<ApiError> {
  try {
    const body = await r.json();
    const e = body.error ?? {};
    const details = Array.isArray(e.details)
      ? e.details.map((d: { field?: string; message?: string }) => `${d.field}: ${d.message}`).join("; ")
      : "";
    return new ApiError(r.status, [e.message, details].filter(Boolean).join(" — "), e.details);
  } catch {
    return new ApiError(r.status, `${r.status} ${r.statusText}`);
  }
}

/** One API call with the access token; a 401 refreshes once and tries again. */
export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const headers: Record<string, string> = {};
    if (access) headers.authorization = `Bearer ${access}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (r.status === 401 && attempt === 0 && (await refresh())) continue;
    if (r.status === 401) access = null;
    if (!r.ok) throw await errorOf(r);
    return r.status === 204 ? (undefined as T) : r.json();
  }
}

export async function signIn(email: string, password: string): Promise<void> {
  const r = await fetch(`${API}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password, refresh_in_cookie: true }),
    credentials: "same-origin",
  });
  if (!r.ok) throw await errorOf(r);
  access = (await r.json()).access_token;
}

export async function signOut(): Promise<void> {
  const token = csrf();
  if (token)
    await fetch(`${API}/auth/refresh`, {
      method: "DELETE",
      headers: { "x-csrf-token": token },
      credentials: "same-origin",
    });
  access = null;
}

class Reconnect extends Error {}

/** Server-Sent Events with the bearer token (EventSource cannot send one): reconnects, with a
 * fresh token when the old one expired, until `signal` aborts. */
export function stream(path: string, onEvent: (event: string, data: any) => void, signal: AbortSignal): void {
  const open = () => {
    if (signal.aborted) return;
    fetchEventSource(API + path, {
      headers: access ? { authorization: `Bearer ${access}` } : {},
      signal,
      openWhenHidden: true,
      async onopen(r) {
        if (r.status === 401) throw new Reconnect();
        if (!r.ok) throw new Error(`stream ${path}: ${r.status}`);
      },
      onmessage(m) {
        if (m.data) onEvent(m.event || "message", JSON.parse(m.data));
      },
      onclose() {
        throw new Reconnect();
      },
      onerror(err) {
        throw err; // reconnect ourselves, with a fresh token if needed
      },
    }).catch(async (err) => {
      if (signal.aborted) return;
      if (err instanceof Reconnect) await refresh();
      setTimeout(open, 1000);
    });
  };
  open();
}
