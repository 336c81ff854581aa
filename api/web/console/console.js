// The auditors' console: audit log (filters, paging, chain verification), privacy-budget report,
// and one user's export, deletion and deletion proof. Every read here is itself audited by the API.

import { Api, download } from "../shared/api.js";
import { $, announce, showView, busy, el, formatNumber } from "../shared/ui.js";

// The audit log's actions (AuditAction in docs/openapi.json; tests/api/test_web_clients.py keeps them equal).
export const AUDIT_ACTIONS = [
  "login", "login_failed", "login_throttled", "export", "deletion", "key_rotation", "privacy_cap_change",
  "auditor_read", "population_release", "refresh_token_reuse", "password_change",
];
const VIEWS = ["log", "budget", "users"];
const BINS = 10;

const api = new Api({ storageKey: "matchsvc.console.refresh", onSignedOut: () => show("signin") });
const log = { cursors: [null], page: 0 };

function show(view) {
  showView(view, VIEWS);
}

async function route() {
  if (!api.signedIn) return show("signin");
  const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "log";
  show(view);
  $("#main").focus();
  try {
    if (view === "log") await loadLog(0);
    if (view === "budget") await loadBudget();
  } catch (error) {
    announce(error.message);
  }
}

$("#signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form.querySelector("button"), $("#signin-error"), async () => {
    await api.signIn(form.username.value, form.password.value);
    const me = await api.call("me");
    if (!me.scopes.includes("auditor")) {
      await api.signOut();
      throw new Error("This account does not hold the auditor scope.");
    }
    form.reset();
    announce(`Signed in as ${me.username}.`);
    if (location.hash === "#log" || !location.hash || location.hash === "#signout") {
      location.hash = "#log";
      await route();
    } else await route();
  });
});

$("#signout").addEventListener("click", async (event) => {
  event.preventDefault();
  await api.signOut();
  show("signin");
  announce("Signed out.");
});

// ---------------------------------------------------------------- audit log

for (const action of AUDIT_ACTIONS) $("#filter-action").append(el("option", { value: action }, action));

function isoOrNull(value) {
  return value ? new Date(value).toISOString() : null;
}

function logQuery() {
  const form = $("#log-filters");
  return {
    action: form.action.value,
    subject: form.subject.value.trim(),
    since: isoOrNull(form.since.value),
    until: isoOrNull(form.until.value),
    limit: form.limit.value,
  };
}

async function loadLog(page) {
  const result = await api.call("auditLog", { query: { ...logQuery(), cursor: log.cursors[page] } });
  log.page = page;
  log.cursors[page + 1] = result.next_cursor;
  log.cursors.length = page + 2;
  $("#log-table tbody").replaceChildren(
    ...result.items.map((entry) =>
      el("tr", {},
        el("td", {}, String(entry.id)),
        el("td", {}, new Date(entry.created_at).toLocaleString()),
        el("td", {}, entry.action),
        el("td", {}, entry.actor_scope),
        el("td", {}, entry.subject ? el("code", {}, entry.subject) : "—"),
        el("td", {}, el("code", {}, JSON.stringify(entry.details)))),
    ),
  );
  $("#log-next").disabled = !result.next_cursor;
  $("#log-first").disabled = page === 0;
  $("#log-page").textContent = `Page ${page + 1}: ${result.items.length} entries${result.next_cursor ? ", more follow" : ", last page"}.`;
}

$("#log-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  busy(event.currentTarget.querySelector("button[type=submit]"), $("#log-error"), async () => {
    log.cursors = [null];
    await loadLog(0);
    announce("Filters applied.");
  });
});
$("#log-next").addEventListener("click", (event) => busy(event.currentTarget, $("#log-error"), () => loadLog(log.page + 1)));
$("#log-first").addEventListener("click", (event) => busy(event.currentTarget, $("#log-error"), () => loadLog(0)));

$("#verify").addEventListener("click", (event) =>
  busy(event.currentTarget, null, async () => {
    const result = await api.call("auditVerify");
    const box = $("#verify-result");
    if (result.ok) {
      box.replaceChildren(el("span", { class: "ok" }, "Chain intact. "),
        `${result.entries} entries checked; head hash `, el("code", {}, result.head_hash ?? "—"), ".");
    } else {
      box.replaceChildren(el("span", { class: "bad" }, "Chain broken. "),
        `First bad entry: #${result.first_bad_id} (${result.reason}); ${result.entries} entries examined.`);
    }
    announce(result.ok ? "The audit chain is intact." : `The audit chain is broken at entry ${result.first_bad_id}.`);
  }),
);

// ---------------------------------------------------------------- privacy budget

function histogram(values, cap) {
  const top = Math.max(cap, ...values, 1e-9);
  const counts = new Array(BINS).fill(0);
  for (const value of values) counts[Math.min(BINS - 1, Math.floor((value / top) * BINS))] += 1;
  const most = Math.max(1, ...counts);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 420 180");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-labelledby", "histogram-title");
  counts.forEach((count, i) => {
    const height = (120 * count) / most;
    const bar = document.createElementNS(ns, "rect");
    Object.entries({ class: "bar", x: 10 + i * 40, y: 150 - height, width: 34, height }).forEach(([k, v]) => bar.setAttribute(k, v));
    const label = document.createElementNS(ns, "text");
    Object.entries({ x: 12 + i * 40, y: 165 }).forEach(([k, v]) => label.setAttribute(k, v));
    label.textContent = formatNumber(((i + 1) * top) / BINS, 1);
    const value = document.createElementNS(ns, "text");
    Object.entries({ x: 14 + i * 40, y: 146 - height }).forEach(([k, v]) => value.setAttribute(k, v));
    value.textContent = String(count);
    svg.append(bar, label, value);
  });
  const rows = counts.map((count, i) =>
    el("tr", {}, el("td", {}, `${formatNumber((i * top) / BINS)} – ${formatNumber(((i + 1) * top) / BINS)}`), el("td", {}, String(count))));
  return [svg, el("table", {}, el("caption", { class: "visually-hidden" }, "Histogram as a table"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "ε spent"), el("th", { scope: "col" }, "users"))), el("tbody", {}, rows))];
}

async function loadBudget() {
  const [report, csv] = await Promise.all([
    api.call("privacyBudget"),
    api.call("privacyBudget", { query: { format: "csv" }, as: "text" }),
  ]);
  const values = csv.trim().split("\n").slice(1).filter(Boolean).map((line) => Number(line.split(",")[1]));
  $("#budget-summary").replaceChildren(
    el("h3", {}, "Ratings (label-level DP)"),
    el("p", {}, `Mechanism ${report.mechanism}, ε = ${formatNumber(report.epsilon_per_release)} per rating, lifetime cap ε = ${formatNumber(report.epsilon_cap)}.`),
    el("p", {}, `${report.users} users have spent budget; ${report.users_at_cap} are at the cap.`),
    el("p", {}, "Quantiles of users' worst-case ε: " +
      Object.entries(report.spent_quantiles).map(([q, v]) => `${q}: ${formatNumber(v)}`).join(", ")),
  );
  $("#histogram").replaceChildren(...histogram(values, report.epsilon_cap));
  const population = report.population_model;
  $("#population").replaceChildren(
    el("h3", {}, "Population model releases (user-level DP)"),
    el("p", {}, `Neighbouring relation: ${population.neighbouring}. Spent ε = ${formatNumber(population.epsilon_spent)} of a cap of ${formatNumber(population.epsilon_cap)} at δ = ${population.delta}; ε = ${formatNumber(population.epsilon_per_release)} per release.`),
    population.releases.length
      ? el("table", {},
        el("caption", {}, "Releases, oldest first"),
        el("thead", {}, el("tr", {}, ...["version", "created", "mechanism", "ε", "δ", "users", "noise multiplier", "steps"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, population.releases.map((r) =>
          el("tr", {}, ...[r.version, new Date(r.created_at).toLocaleString(), r.mechanism, formatNumber(r.epsilon), r.delta, r.n_users, formatNumber(r.noise_multiplier), r.steps].map((v) => el("td", {}, String(v)))))))
      : el("p", { class: "muted" }, "No population model has been released yet."),
  );
}

// ---------------------------------------------------------------- one user

function userId() {
  const input = $("#user-id");
  if (!input.reportValidity()) throw new Error("Enter the user's id (a UUID).");
  return input.value.trim();
}

async function showProof(id) {
  const proof = await api.call("deletionProof", { params: { user_id: id } });
  const references = Object.entries(proof.references).filter(([, n]) => n > 0);
  const box = $("#proof");
  box.hidden = false;
  box.replaceChildren(
    el("h3", {}, "Deletion proof"),
    el("p", {}, proof.clean
      ? el("span", { class: "ok" }, `Clean: no row in any table references ${proof.user_id}.`)
      : el("span", { class: "bad" }, `${references.length} table column(s) still reference ${proof.user_id}.`)),
    el("table", {}, el("caption", {}, "Rows per table column, found by walking the schema"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "table.column"), el("th", { scope: "col" }, "rows"))),
      el("tbody", {}, Object.entries(proof.references).map(([column, n]) => el("tr", {}, el("td", {}, column), el("td", {}, String(n)))))),
  );
  return proof;
}

$("#export-user").addEventListener("click", (event) =>
  busy(event.currentTarget, $("#user-error"), async () => {
    const id = userId();
    download(`matchsvc-user-${id}.json`, await api.call("exportUser", { params: { user_id: id } }));
    announce("The export was downloaded.");
  }),
);

$("#proof-user").addEventListener("click", (event) =>
  busy(event.currentTarget, $("#user-error"), async () => {
    const proof = await showProof(userId());
    announce(proof.clean ? "Deletion proof: clean." : "Deletion proof: rows remain.");
  }),
);

$("#delete-user").addEventListener("click", (event) =>
  busy(event.currentTarget, $("#user-error"), async () => {
    const id = userId();
    if (!$("#delete-confirm").checked) throw new Error("Tick the box to confirm the deletion first.");
    await api.call("deleteUser", { params: { user_id: id }, as: "none" });
    $("#delete-confirm").checked = false;
    const proof = await showProof(id);
    announce(`User deleted. Deletion proof: ${proof.clean ? "clean" : "rows remain"}.`);
  }),
);

window.addEventListener("hashchange", route);

(async function start() {
  if (api.canResume && (await api.resume())) return route();
  show("signin");
})();
