// The raters' app: one page, one section per view (#rate, #likes, #look, #people, #data).

import { Api, ApiError, NetworkError, download, onDevicePolicy } from "../shared/api.js";
import { $, announce, showView, apiImage, busy, el, formatNumber, showError } from "../shared/ui.js";
import { RatingQueue } from "./queue.js";

const VIEWS = ["rate", "likes", "look", "people", "data"];
const PRELOAD = 4;
const SWIPE_PX = 80;
const LOOK_ROUNDS = 4;
const LOOK_SPREAD = [null, 0.5, 0.3, 0.15];

const api = new Api({ storageKey: "matchsvc.app.refresh", onSignedOut: () => showSignIn() });
const state = { me: null, queue: null, feed: [], seen: new Set(), current: null, privacy: null, look: null, decided: new Set() };

// ---------------------------------------------------------------- navigation

function show(view) {
  showView(view, VIEWS);
}

async function route() {
  if (!api.signedIn) return showSignIn();
  const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "rate";
  show(view);
  $("#main").focus();
  try {
    await { rate: openRate, likes: openLikes, look: openLook, people: openPeople, data: openData }[view]();
  } catch (error) {
    announce(error.message);
  }
}

function showSignIn() {
  state.me = null;
  show("signin");
}

// ---------------------------------------------------------------- sign in / up / out

async function afterSignIn() {
  state.me = await api.call("me");
  state.queue = new RatingQueue({
    api,
    storageKey: `matchsvc.app.queue.${state.me.id}`,
    onChange: describeQueue,
  });
  state.feed = [];
  state.seen = new Set();
  state.decided = new Set();
  state.current = null;
  describeQueue(state.queue.size());
  announce(`Signed in as ${state.me.username}.`);
  flushQueue();
  if (!VIEWS.includes(location.hash.slice(1))) location.hash = "#rate";
  else await route();
}

$("#signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form.querySelector("button"), $("#signin-error"), async () => {
    await api.signIn(form.username.value, form.password.value);
    form.reset();
    await afterSignIn();
  });
});

$("#signup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form.querySelector("button"), $("#signup-error"), async () => {
    const username = form.username.value;
    const password = form.password.value;
    await api.call("register", { json: { username, password, birth_year: Number(form.birth_year.value) } });
    await api.signIn(username, password);
    form.reset();
    await afterSignIn();
  });
});

$("#signout").addEventListener("click", (event) =>
  busy(event.currentTarget, null, async () => {
    await api.signOut();
    showSignIn();
    announce("Signed out.");
  }),
);

// ---------------------------------------------------------------- rating

/** True with probability p, from the platform's cryptographic generator (53 random bits). */
function coin(p) {
  const [high, low] = crypto.getRandomValues(new Uint32Array(2));
  return ((high >>> 5) * 67108864 + (low >>> 6)) / 9007199254740992 < p;
}

function keepProbability(epsilon) {
  return Math.exp(epsilon) / (1 + Math.exp(epsilon));
}

function ratingBody(faceId, liked) {
  const policy = onDevicePolicy(state.privacy);
  if (policy && $("#rr-toggle").checked) {
    const sent = coin(keepProbability(policy.epsilon)) ? liked : !liked;
    return { face_id: faceId, randomized_like: sent, epsilon: policy.epsilon };
  }
  return { face_id: faceId, liked };
}

function describePrivacy() {
  const privacy = state.privacy;
  const policy = onDevicePolicy(privacy);
  const toggle = $("#rr-toggle");
  toggle.disabled = !policy;
  if (policy && toggle.checked) {
    const flip = (100 * (1 - keepProbability(policy.epsilon))).toFixed(0);
    $("#privacy-sentence").textContent =
      `Only a randomized answer leaves this phone: before sending, a coin tossed here swaps your like or pass ` +
      `for the opposite ${flip}% of the time (ε = ${formatNumber(policy.epsilon)} per rating), so your true answer is never sent.`;
  } else if (policy) {
    $("#privacy-sentence").textContent =
      `Your true answer is sent to the server, which randomizes it before storing it (ε = ${formatNumber(privacy.epsilon_per_rating ?? 0)} per rating).`;
  } else {
    toggle.checked = false;
    $("#privacy-sentence").textContent =
      "Your like or pass is sent to the server, which randomizes it before anything is stored; this server does not offer randomizing on the phone.";
  }
  if (privacy) {
    $("#privacy-spent").textContent =
      `Privacy spent: ε = ${formatNumber(privacy.epsilon_spent)} of ${formatNumber(privacy.epsilon_cap)}. ${privacy.guarantee}`;
  }
}

async function loadPrivacy() {
  state.privacy = await api.call("privacy");
  describePrivacy();
}

$("#rr-toggle").addEventListener("change", describePrivacy);

function describeQueue(size) {
  $("#queue-state").textContent =
    size === 0 ? "All your ratings are sent." : `${size} rating${size === 1 ? "" : "s"} waiting to be sent${navigator.onLine ? "…" : " when you are back online."}`;
}

async function flushQueue() {
  if (!state.queue) return;
  try {
    const outcomes = await state.queue.flush();
    const lost = outcomes.filter((outcome) => outcome !== "created" && outcome !== "replaced");
    if (lost.length) announce(`${lost.length} rating(s) were not recorded: ${lost[0]}.`);
    if (outcomes.length && navigator.onLine && !$("#view-rate").hidden) loadPrivacy().catch(() => {});
  } catch (error) {
    announce(error.message);
  }
}

window.addEventListener("online", () => {
  announce("Back online: sending your ratings.");
  flushQueue().then(() => !$("#view-rate").hidden && fillFeed());
});
window.addEventListener("offline", () => {
  announce("You are offline. Keep rating: your ratings are saved on this phone and sent later.");
  describeQueue(state.queue ? state.queue.size() : 0);
});

/** Keep PRELOAD faces ahead with their images already downloaded, so rating works offline too. */
async function fillFeed() {
  if (state.feed.length < PRELOAD && navigator.onLine) {
    try {
      const batch = await api.call("nextFaces", { query: { n: 10 } });
      for (const face of batch.faces) {
        if (!state.seen.has(face.id)) {
          state.seen.add(face.id);
          state.feed.push({ id: face.id, url: null });
        }
      }
    } catch (error) {
      if (!(error instanceof NetworkError)) throw error;
    }
  }
  await Promise.all(
    state.feed.slice(0, PRELOAD).map(async (face) => {
      if (face.url || !navigator.onLine) return;
      try {
        face.url = URL.createObjectURL(await api.call("faceImage", { params: { face_id: face.id }, as: "blob" }));
      } catch (error) {
        if (!(error instanceof NetworkError)) throw error;
      }
    }),
  );
  if (!state.current) showNextFace();
}

function showNextFace() {
  const index = state.feed.findIndex((face) => face.url);
  const image = $("#face");
  if (index < 0) {
    state.current = null;
    image.hidden = true;
    $("#feed-empty").hidden = false;
    $("#like").disabled = $("#pass").disabled = true;
    return;
  }
  [state.current] = state.feed.splice(index, 1);
  image.src = state.current.url;
  image.alt = "A generated face to rate";
  image.hidden = false;
  $("#feed-empty").hidden = true;
  $("#like").disabled = $("#pass").disabled = false;
}

function rate(liked) {
  const face = state.current;
  if (!face) return;
  state.queue.add(ratingBody(face.id, liked));
  URL.revokeObjectURL(face.url);
  state.current = null;
  announce(liked ? "Liked." : "Passed.");
  showNextFace();
  flushQueue();
  fillFeed().catch((error) => announce(error.message));
}

async function openRate() {
  if (navigator.onLine) await loadPrivacy();
  else describePrivacy();
  await fillFeed();
}

$("#like").addEventListener("click", () => rate(true));
$("#pass").addEventListener("click", () => rate(false));

document.addEventListener("keydown", (event) => {
  if ($("#view-rate").hidden || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.target.closest("input, select, textarea")) return;
  if (event.key === "ArrowRight") rate(true);
  else if (event.key === "ArrowLeft") rate(false);
  else return;
  event.preventDefault();
});

(function swipe() {
  const card = $("#face-card");
  let start = null;
  card.addEventListener("dragstart", (event) => event.preventDefault()); // a mouse drag is a swipe, not a drag-and-drop
  card.addEventListener("pointerdown", (event) => {
    start = { x: event.clientX, id: event.pointerId };
    card.setPointerCapture(event.pointerId);
  });
  card.addEventListener("pointermove", (event) => {
    if (!start || event.pointerId !== start.id) return;
    const dx = event.clientX - start.x;
    card.style.transform = `translateX(${dx}px) rotate(${dx / 20}deg)`;
    card.classList.toggle("swipe-like", dx > SWIPE_PX);
    card.classList.toggle("swipe-pass", dx < -SWIPE_PX);
  });
  const end = (event) => {
    if (!start || event.pointerId !== start.id) return;
    const dx = event.clientX - start.x;
    start = null;
    card.style.transform = "";
    card.classList.remove("swipe-like", "swipe-pass");
    if (dx > SWIPE_PX) rate(true);
    else if (dx < -SWIPE_PX) rate(false);
  };
  card.addEventListener("pointerup", end);
  card.addEventListener("pointercancel", end);
})();

// ---------------------------------------------------------------- what you like

async function openLikes() {
  const box = $("#profile-summary");
  try {
    const profile = await api.call("preferenceProfile");
    const mix = profile.personas
      .slice()
      .sort((a, b) => b.share - a.share)
      .map((p) =>
        el("li", {}, `Taste group ${p.persona + 1}: ${(100 * p.share).toFixed(0)}% `,
          el("meter", { class: "meter", min: 0, max: 1, value: p.share, "aria-label": `Share of taste group ${p.persona + 1}` })),
      );
    box.replaceChildren(el("div", {},
      el("p", {}, `Based on ${profile.ratings} rating${profile.ratings === 1 ? "" : "s"}.`),
      el("p", {}, `How sure the model is: ${profile.certainty.level} (${(100 * profile.certainty.score).toFixed(0)}%).`),
      el("p", {}, profile.ratings_to_improve === null
        ? "Many more ratings would be needed to sharpen it noticeably."
        : `About ${profile.ratings_to_improve} more ratings would halve what it is still unsure about.`),
      profile.drift_detected ? el("p", {}, "Your taste seems to have changed lately: older ratings count less.") : null,
      el("h3", {}, "Your mix of taste groups"),
      el("ul", {}, mix),
    ));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 409) throw error;
    box.replaceChildren(el("p", {}, error.message));
  }
}

$("#score").addEventListener("input", (event) => {
  $("#score-value").textContent = Number(event.currentTarget.value).toFixed(2);
});

$("#show-ideal").addEventListener("click", (event) =>
  busy(event.currentTarget, $("#ideal-error"), async () => {
    const score = Number($("#score").value);
    const result = await api.call("idealFaces", { query: { n: 8, score } });
    $("#ideal-faces").replaceChildren(
      ...result.faces.map((face, i) =>
        el("figure", {},
          el("img", { src: face.image, alt: `Generated face ${i + 1} your model likes with probability ${face.like_probability.toFixed(2)}`, width: 256, height: 256 }),
          el("figcaption", {}, `Like probability ${face.like_probability.toFixed(2)}`)),
      ),
    );
    announce(`Showing ${result.faces.length} faces at like probability ${score.toFixed(2)}.`);
  }),
);

// ---------------------------------------------------------------- how you look

function gaussian() {
  const [a, b] = crypto.getRandomValues(new Uint32Array(2));
  const u = (a + 1) / 4294967297;
  const v = (b + 1) / 4294967297;
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function drawLook(space, around, spread) {
  return Array.from({ length: space.dim }, (_, i) => {
    const value = around ? around[i] + spread * gaussian() : gaussian();
    return Math.min(space.upper[i], Math.max(space.lower[i], value));
  });
}

async function showLookRound() {
  const look = state.look;
  const latents = look.pick
    ? [look.pick, ...Array.from({ length: 3 }, () => drawLook(look.space, look.pick, LOOK_SPREAD[look.round - 1]))]
    : Array.from({ length: 4 }, () => drawLook(look.space, null, 1));
  $("#look-round").hidden = false;
  $("#look-round").textContent = `Round ${look.round} of ${LOOK_ROUNDS}: pick the face closest to how you look`;
  const buttons = await Promise.all(
    latents.map(async (latent, i) => {
      const png = await api.call("previewAppearance", { json: { latent }, as: "blob" });
      const url = URL.createObjectURL(png);
      const label = look.pick && i === 0 ? "Keep your last pick" : `Candidate ${i + 1}`;
      return el("button", { type: "button", class: "look-choice", "aria-pressed": "false", "aria-label": label, onclick: () => pickLook(latent, label) },
        el("img", { src: url, alt: "", width: 256, height: 256 }));
    }),
  );
  $("#look-candidates").replaceChildren(...buttons);
  announce(`Round ${look.round}: four faces to choose from.`);
}

function pickLook(latent, label) {
  const look = state.look;
  look.pick = latent;
  $("#look-save").hidden = false;
  if (look.round < LOOK_ROUNDS) {
    look.round += 1;
    announce(`Picked ${label}.`);
    showLookRound().catch((error) => showError($("#look-error"), error));
  } else {
    for (const button of document.querySelectorAll(".look-choice")) {
      button.setAttribute("aria-pressed", String(button.getAttribute("aria-label") === label));
    }
    announce(`Picked ${label}. Save it as your appearance when you are happy with it.`);
    $("#look-save").focus();
  }
}

$("#look-start").addEventListener("click", (event) =>
  busy(event.currentTarget, $("#look-error"), async () => {
    state.look = { space: await api.call("appearanceSpace"), round: 1, pick: null };
    $("#look-save").hidden = true;
    await showLookRound();
  }),
);

$("#look-save").addEventListener("click", (event) =>
  busy(event.currentTarget, $("#look-error"), async () => {
    await api.call("setAppearance", { json: { latent: state.look.pick }, as: "none" });
    await showAvatar();
    announce("Your appearance is saved. Matches see this generated avatar, never a photo.");
  }),
);

async function showAvatar() {
  try {
    $("#avatar").replaceChildren(await apiImage(api, "avatar", {}, "Your generated avatar"));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
  }
}

async function openLook() {
  await showAvatar();
}

// ---------------------------------------------------------------- people: filters, candidates, matches

$("#filters-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form.querySelector("button[type=submit]"), $("#filters-error"), async () => {
    const seeks = [...form.querySelectorAll("input[name=seeks]:checked")].map((box) => box.value);
    if (!seeks.length) throw new Error("Pick at least one kind of person to meet.");
    await api.call("setFilters", {
      json: { gender: form.gender.value, seeks, age_min: Number(form.age_min.value), age_max: Number(form.age_max.value) },
    });
    announce("Profile saved. New suggestions appear after the next matching run.");
  });
});

async function loadFilters() {
  try {
    const filters = await api.call("getFilters");
    const form = $("#filters-form");
    form.gender.value = filters.gender;
    for (const box of form.querySelectorAll("input[name=seeks]")) box.checked = filters.seeks.includes(box.value);
    form.age_min.value = filters.age_min;
    form.age_max.value = filters.age_max;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
  }
}

async function personCard({ title, image, actions }) {
  return el("li", { class: "card" }, el("figure", {}, image, el("figcaption", {}, title)), el("div", { class: "row" }, actions));
}

async function loadPeople() {
  const [page, matches] = await Promise.all([api.call("candidates", { query: { limit: 20 } }), api.call("matches")]);
  // Stored lists are recomputed by the next matching run; until then hide whom you already decided on.
  const matched = new Set(matches.items.map((match) => match.user_id));
  const candidates = page.items.filter((c) => !state.decided.has(c.user_id) && !matched.has(c.user_id));
  $("#candidates").replaceChildren(
    ...(await Promise.all(
      candidates.map(async (candidate, i) =>
        personCard({
          title: `Suggestion ${i + 1}`,
          image: await apiImage(api, "candidateAvatar", { candidate_id: candidate.user_id }, `Avatar of suggestion ${i + 1}`),
          actions: [
            el("button", { type: "button", class: "primary", "aria-label": `Like suggestion ${i + 1}`, onclick: (e) => decide(e.currentTarget, "like", candidate.user_id) }, "Like"),
            el("button", { type: "button", "aria-label": `Pass on suggestion ${i + 1}`, onclick: (e) => decide(e.currentTarget, "pass", candidate.user_id) }, "Pass"),
            el("button", { type: "button", class: "danger", "aria-label": `Block suggestion ${i + 1}`, onclick: (e) => block(e.currentTarget, candidate.user_id) }, "Block"),
          ],
        }),
      ),
    )),
  );
  if (!candidates.length) $("#candidates").replaceChildren(el("li", { class: "muted" }, "No suggestions yet: rate more faces and set your profile and appearance."));
  $("#matches").replaceChildren(
    ...(await Promise.all(
      matches.items.map(async (match, i) =>
        personCard({
          title: `Match ${i + 1}, since ${new Date(match.created_at).toLocaleDateString()}`,
          image: await apiImage(api, "matchAvatar", { match_id: match.id }, `Avatar of match ${i + 1}`),
          actions: [
            el("button", { type: "button", "aria-label": `Unmatch match ${i + 1}`, onclick: (e) => unmatch(e.currentTarget, match.id) }, "Unmatch"),
            el("button", { type: "button", class: "danger", "aria-label": `Block match ${i + 1}`, onclick: (e) => block(e.currentTarget, match.user_id) }, "Block"),
          ],
        }),
      ),
    )),
  );
  if (!matches.items.length) $("#matches").replaceChildren(el("li", { class: "muted" }, "No matches yet."));
}

function decide(button, verdict, candidateId) {
  return busy(button, null, async () => {
    const result = await api.call(verdict, { params: { candidate_id: candidateId } });
    state.decided.add(candidateId);
    await loadPeople();
    announce(result.matched ? "It's a match!" : verdict === "like" ? "Liked." : "Passed.");
  });
}

function unmatch(button, matchId) {
  return busy(button, null, async () => {
    await api.call("unmatch", { params: { match_id: matchId }, as: "none" });
    await loadPeople();
    announce("Unmatched.");
  });
}

function block(button, userId) {
  return busy(button, null, async () => {
    await api.call("block", { params: { user_id: userId }, as: "none" });
    await loadPeople();
    announce("Blocked: you will not see each other again.");
  });
}

$("#refresh-people").addEventListener("click", (event) => busy(event.currentTarget, null, loadPeople));

async function openPeople() {
  await Promise.all([loadFilters(), loadPeople()]);
}

// ---------------------------------------------------------------- your data

async function loadSessions() {
  const { items } = await api.call("sessions");
  $("#sessions").replaceChildren(
    ...items.map((session, i) => {
      const name = session.device_name || `Device ${i + 1}`;
      const used = new Date(session.last_used_at).toLocaleString();
      return el("li", { class: "row" },
        el("span", {}, `${name}${session.current ? " (this device)" : ""}, last used ${used}`),
        session.current
          ? null
          : el("button", { type: "button", "aria-label": `Sign out ${name}`, onclick: (e) => endSession(e.currentTarget, session.id, name) }, "Sign out"));
    }),
  );
}

function endSession(button, sessionId, name) {
  return busy(button, null, async () => {
    await api.call("endSession", { params: { session_id: sessionId }, as: "none" });
    await loadSessions();
    announce(`${name} is signed out.`);
  });
}

async function openData() {
  loadSessions().catch((error) => announce(error.message));
  const privacy = await api.call("privacy");
  $("#privacy-report").replaceChildren(
    el("h3", {}, "Privacy spent"),
    el("p", {}, `ε = ${formatNumber(privacy.epsilon_spent)} of a lifetime cap of ${formatNumber(privacy.epsilon_cap)} (${privacy.spends} recorded spends, mechanism ${privacy.mechanism}).`),
    el("p", {}, privacy.guarantee),
  );
}

$("#export").addEventListener("click", (event) =>
  busy(event.currentTarget, null, async () => {
    download(`matchsvc-export-${state.me.username}.json`, await api.call("exportMe"));
    announce("Your data was downloaded.");
  }),
);

$("#delete").addEventListener("click", (event) =>
  busy(event.currentTarget, $("#delete-error"), async () => {
    if (!$("#delete-confirm").checked) throw new Error("Tick the box to confirm first.");
    await api.call("deleteMe", { as: "none" });
    localStorage.removeItem(state.queue.storageKey);
    api.forget();
    $("#delete-confirm").checked = false;
    announce("Your account and all its data were deleted.");
  }),
);

// ---------------------------------------------------------------- start

window.addEventListener("hashchange", route);

(async function start() {
  if (api.canResume && (await api.resume())) {
    try {
      await afterSignIn();
      return;
    } catch (error) {
      announce(error.message);
    }
  }
  showSignIn();
})();
