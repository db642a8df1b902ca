// Talking to the cluster: the token, fetch with a deadline, and the set of members to ask.
//
// The token lives in sessionStorage (or localStorage when "remember" is ticked) and is sent
// as `Authorization: Bearer <token>`; it is never put in a URL. Every member's API is asked
// directly (CORS for the cluster's own origins), so the page keeps working when the member
// it was loaded from dies.

const TOKEN_KEY = "univrs.token";

export function loadToken() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";
}

export function saveToken(token, remember) {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
  if (!token) return;
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** No answer: the connection failed (fetch's TypeError, translated at the edge). */
export class NetworkError extends Error {}

/** fetch, with a failed connection as NetworkError (any other exception is a bug). */
export async function fetchOrFail(url, init) {
  try {
    return await fetch(url, init);
  } catch (err) {
    if (err instanceof TypeError) throw new NetworkError(err.message);
    throw err;
  }
}

/** Whether an exception is an expected outcome (an answer, no answer, an abort), not a bug. */
export function expected(err) {
  return err instanceof ApiError || err instanceof NetworkError || (err && err.name === "AbortError");
}

/** The base URL of a member's API ("host:port" as the cluster advertises it). */
export function baseUrl(api) {
  return `${location.protocol}//${api}`;
}

export function authHeaders() {
  const token = loadToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** GET a path from one member; rejects with ApiError (an answer) or TypeError (no answer). */
export async function get(api, path, { timeoutMs = 2500, text = false, signal } = {}) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  const onAbort = () => ctrl.abort();
  if (signal) signal.addEventListener("abort", onAbort);
  try {
    const resp = await fetchOrFail(baseUrl(api) + path, {
      headers: authHeaders(),
      signal: ctrl.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (!resp.ok) {
      let code = String(resp.status);
      let message = resp.statusText;
      try {
        const doc = await resp.json();
        if (doc && doc.error) {
          code = doc.error.code || code;
          message = doc.error.message || message;
        }
      } catch (_) {
        // not JSON: keep the status line
      }
      throw new ApiError(resp.status, code, message);
    }
    try {
      return text ? await resp.text() : await resp.json();
    } catch (err) {
      if (err instanceof TypeError) throw new NetworkError(err.message); // body cut off
      throw err;
    }
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener("abort", onAbort);
  }
}

/** Every page of a list endpoint: {items, revision} (the last page's revision). */
export async function listAll(api, path, opts = {}) {
  const items = [];
  let after = null;
  let revision = null;
  for (let page = 0; page < 100; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const url = `${path}${sep}limit=1000${after ? `&after=${encodeURIComponent(after)}` : ""}`;
    const doc = await get(api, url, opts);
    items.push(...(doc.items || []));
    if (revision === null || (doc.revision ?? 0) < revision) revision = doc.revision ?? 0;
    if (!doc.next) return { items, revision, doc };
    after = doc.next;
  }
  return { items, revision, doc: null };
}

/**
 * Members: id -> {id, api, status (its /v1/node/status), ok, error, seen (ms)}.
 * `addresses` keeps every API address ever learnt, so a member that died is still listed
 * (and asked again: it may come back).
 */
export class Members {
  constructor(first) {
    this.byId = new Map();
    this.unnamed = new Set([first]); // addresses whose member id is not known yet
  }

  addresses() {
    const out = new Set(this.unnamed);
    for (const m of this.byId.values()) if (m.api) out.add(m.api);
    return [...out];
  }

  learn(endpoints) {
    for (const [id, addrs] of Object.entries(endpoints.members || {})) {
      if (!addrs.api) continue;
      const m = this.byId.get(id) || { id, ok: false, status: null, error: "not asked yet", seen: 0 };
      m.api = addrs.api;
      this.byId.set(id, m);
      this.unnamed.delete(addrs.api);
    }
  }

  /** Ask every known address for its status, in parallel. */
  async refresh() {
    const now = Date.now();
    await Promise.all(
      this.addresses().map(async (api) => {
        try {
          const status = await get(api, "/v1/node/status", { timeoutMs: 1500 });
          const m = this.byId.get(status.id) || { id: status.id };
          Object.assign(m, { api, status, ok: true, error: null, seen: now });
          this.byId.set(status.id, m);
          this.unnamed.delete(api);
        } catch (err) {
          for (const m of this.byId.values()) {
            if (m.api === api) Object.assign(m, { ok: false, error: describeError(err) });
          }
        }
      }),
    );
  }

  live() {
    return [...this.byId.values()].filter((m) => m.ok);
  }

  /** The leader of the highest term any live member reports, and that term. */
  leader() {
    let best = null;
    for (const m of this.live()) {
      const s = m.status;
      if (s.role === "leader" && (!best || s.term > best.status.term)) best = m;
    }
    const term = Math.max(0, ...this.live().map((m) => m.status.term));
    return { leader: best && best.status.term === term ? best : null, term };
  }

  /** A live member to read from: the preferred one if live, else the leader, else any. */
  pick(preferred) {
    const live = this.live();
    const p = live.find((m) => m.id === preferred);
    if (p) return p;
    return this.leader().leader || live[0] || null;
  }
}

export function describeError(err) {
  if (err instanceof ApiError) return `${err.code}: ${err.message}`;
  if (err && err.name === "AbortError") return "no answer in time";
  return "unreachable";
}
