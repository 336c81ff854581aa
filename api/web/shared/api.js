// Every call the web clients make to the REST API goes through this module, and only through the
// ROUTES table below: tests/api/test_web_clients.py parses the table and fails when a method and
// path is missing from docs/openapi.json, so an API change that breaks a client fails a test.

export const ROUTES = {
  register: ["POST", "/v1/auth/register"],
  token: ["POST", "/v1/auth/token"],
  refresh: ["POST", "/v1/auth/refresh"],
  logout: ["POST", "/v1/auth/logout"],
  me: ["GET", "/v1/me"],
  deleteMe: ["DELETE", "/v1/me"],
  exportMe: ["GET", "/v1/me/export"],
  sessions: ["GET", "/v1/me/sessions"],
  endSession: ["DELETE", "/v1/me/sessions/{session_id}"],
  nextFaces: ["GET", "/v1/faces/next"],
  faceImage: ["GET", "/v1/faces/{face_id}/image"],
  rateBatch: ["POST", "/v1/ratings/batch"],
  privacy: ["GET", "/v1/me/privacy"],
  preferenceProfile: ["GET", "/v1/me/preference-profile"],
  idealFaces: ["GET", "/v1/me/ideal-faces"],
  appearanceSpace: ["GET", "/v1/me/appearance/space"],
  previewAppearance: ["POST", "/v1/me/appearance/preview"],
  setAppearance: ["PUT", "/v1/me/appearance"],
  avatar: ["GET", "/v1/me/avatar"],
  getFilters: ["GET", "/v1/me/profile"],
  setFilters: ["PUT", "/v1/me/profile"],
  candidates: ["GET", "/v1/candidates"],
  candidateAvatar: ["GET", "/v1/candidates/{candidate_id}/avatar"],
  like: ["POST", "/v1/candidates/{candidate_id}/like"],
  pass: ["POST", "/v1/candidates/{candidate_id}/pass"],
  matches: ["GET", "/v1/matches"],
  unmatch: ["DELETE", "/v1/matches/{match_id}"],
  matchAvatar: ["GET", "/v1/matches/{match_id}/avatar"],
  block: ["POST", "/v1/users/{user_id}/block"],
  auditLog: ["GET", "/v1/audit/log"],
  auditVerify: ["GET", "/v1/audit/log/verify"],
  privacyBudget: ["GET", "/v1/audit/privacy-budget"],
  exportUser: ["GET", "/v1/audit/users/{user_id}/export"],
  deleteUser: ["DELETE", "/v1/audit/users/{user_id}"],
  deletionProof: ["GET", "/v1/audit/users/{user_id}/deletion-proof"],
};

/** An RFC 9457 problem (or a bare HTTP failure) from the API. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(describeProblem(status, problem));
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }
}

/** The request never reached the server (offline, DNS, connection reset). */
export class NetworkError extends Error {
  constructor(message) {
    super(message);
    this.name = "NetworkError";
  }
}

/** One plain sentence out of a problem+json body, field errors included. */
export function describeProblem(status, problem) {
  if (!problem || typeof problem !== "object") return `The server answered ${status}.`;
  const fields = (problem.errors || [])
    .map((error) => `${(error.loc || []).filter((part) => part !== "body").join(".")}: ${error.msg}`)
    .join("; ");
  return [problem.detail || problem.title || `HTTP ${status}`, fields].filter(Boolean).join(" ");
}

/** A random Idempotency-Key (128 bits, hex), from the platform's cryptographic generator. */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fill(template, params) {
  return template.replace(/\{(\w+)\}/g, (_, name) => {
    if (params[name] === undefined) throw new Error(`missing path parameter ${name}`);
    return encodeURIComponent(params[name]);
  });
}

/**
 * A client of the API for one signed-in account. The access token lives in memory only; the
 * refresh token (when the server issues one) is kept in localStorage under `storageKey`, so a
 * reload stays signed in, and is replaced by the new one at every refresh (rotation).
 */
export class Api {
  constructor({ storageKey, onSignedOut = () => {} }) {
    this.storageKey = storageKey;
    this.onSignedOut = onSignedOut;
    this.accessToken = null;
    this.sessionId = null;
    this.refreshing = null;
  }

  get signedIn() {
    return this.accessToken !== null;
  }

  get canResume() {
    return localStorage.getItem(this.storageKey) !== null;
  }

  /** Send one request; `as` is "json" (default), "blob", "text" or "none". */
  async call(name, { params = {}, query = {}, json, form, headers = {}, as = "json", retry = true } = {}) {
    const [method, template] = ROUTES[name];
    const url = new URL(fill(template, params), location.origin);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    const init = { method, headers: { ...headers } };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = new URLSearchParams(form);
    }
    if (this.accessToken) init.headers.Authorization = `Bearer ${this.accessToken}`;
    if (!navigator.onLine) throw new NetworkError("You are offline.");
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new NetworkError(`The server could not be reached (${error.message}).`);
    }
    if (response.status === 401 && retry && this.accessToken && (await this.resume())) {
      return this.call(name, { params, query, json, form, headers, as, retry: false });
    }
    if (!response.ok) {
      let problem = null;
      try {
        problem = await response.json();
      } catch {
        problem = null;
      }
      if (response.status === 401 && name !== "token") this.forget();
      throw new ApiError(response.status, problem);
    }
    if (as === "none" || response.status === 204) return null;
    if (as === "blob") return response.blob();
    if (as === "text") return response.text();
    return response.json();
  }

  /** OAuth2 password flow; keeps the tokens it gets back. */
  async signIn(username, password) {
    const body = await this.call("token", {
      form: { username, password, device_name: deviceName() },
    });
    this.keep(body);
    return body;
  }

  /** A new access token from the stored refresh token; false (and signed out) when that fails. */
  async resume() {
    if (!this.canResume) return false;
    this.refreshing ??= (async () => {
      try {
        const refreshToken = localStorage.getItem(this.storageKey);
        const body = await this.call("refresh", {
          form: { grant_type: "refresh_token", refresh_token: refreshToken },
          retry: false,
        });
        this.keep(body);
        return true;
      } catch (error) {
        if (error instanceof NetworkError) return false;
        this.forget();
        return false;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  keep(body) {
    this.accessToken = body.access_token;
    this.sessionId = body.session_id ?? null;
    if (body.refresh_token) localStorage.setItem(this.storageKey, body.refresh_token);
  }

  /** End the session on the server (when it has sessions) and forget every token here. */
  async signOut() {
    if (this.accessToken) {
      try {
        await this.call("logout", { as: "none", retry: false });
      } catch {
        // Signing out locally must work offline too; the refresh token is discarded either way.
      }
    }
    this.forget();
  }

  forget() {
    const wasSignedIn = this.accessToken !== null;
    this.accessToken = null;
    this.sessionId = null;
    localStorage.removeItem(this.storageKey);
    if (wasSignedIn) this.onSignedOut();
  }
}

function deviceName() {
  const platform = navigator.userAgentData?.platform || "browser";
  return `web app (${platform})`.slice(0, 64);
}

/** The on-device randomized-response policy from GET /v1/me/privacy ({epsilon, low, high}), or
 * null when the server only randomizes on its side. */
export function onDevicePolicy(privacy) {
  const low = privacy?.on_device_epsilon_min;
  const high = privacy?.on_device_epsilon_max;
  if (typeof low !== "number" || typeof high !== "number") return null;
  const wanted = typeof privacy.epsilon_per_rating === "number" ? privacy.epsilon_per_rating : high;
  return { epsilon: Math.min(Math.max(wanted, low), high), low, high };
}

/** Save a JSON value (or a Blob) as a file download. */
export function download(filename, value) {
  const blob = value instanceof Blob ? value : new Blob([JSON.stringify(value, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
