// Small DOM helpers shared by the app and the console. Markup is never built from strings: text from the API is
// always set as text, so it can never become markup.

/** Create an element: el("button", { type: "button", onclick: f }, "Like"). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Say something in the page's polite live region (screen readers read it; sighted users see it). */
export function announce(text) {
  const region = $("#status");
  region.textContent = "";
  // A fresh text node after clearing makes screen readers repeat an identical message.
  requestAnimationFrame(() => {
    region.textContent = text;
  });
}

/** Show an error in an assertive live region next to the control that caused it. */
export function showError(region, error) {
  region.textContent = error ? error.message || String(error) : "";
  region.hidden = !error;
}

/** Run an async action from a button, disabling it meanwhile and reporting failure in `errors`. */
export async function busy(button, errors, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (errors) showError(errors, null);
  try {
    return await action();
  } catch (error) {
    if (errors) showError(errors, error);
    else announce(error.message);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** An <img> whose source is an authorised API image turned into a blob: URL (revoked on load). */
export async function apiImage(api, route, params, alt) {
  const blob = await api.call(route, { params, as: "blob" });
  const url = URL.createObjectURL(blob);
  const image = el("img", { src: url, alt, width: 256, height: 256 });
  image.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
  return image;
}

export function formatNumber(value, digits = 2) {
  return typeof value === "number" ? value.toFixed(digits) : String(value);
}

/** Show one view (`#view-<name>`) of a one-page client, mark its link current, and hide the
 * navigation on the sign-in view. */
export function showView(view, views) {
  for (const name of ["signin", ...views]) $(`#view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#${view}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("#nav").hidden = view === "signin";
}
