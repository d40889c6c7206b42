// Messages to the annotator: the banner (errors and notices, with action buttons), the toast, the empty stage
// and the sign-in form.
import { $ } from "./state.js";

export function notice(text) { showBanner(text, "notice", []); }

export function showBanner(text, kind, actions) {
  const banner = $("#banner");
  banner.className = `banner ${kind}`;
  $("#banner-text").textContent = text;
  const holder = $("#banner-actions");
  holder.replaceChildren(...actions.map(([label, run]) => {
    const button = document.createElement("button");
    button.type = "button"; button.textContent = label; button.className = "primary";
    button.addEventListener("click", () => { hideBanner(); run(); });
    return button;
  }));
  banner.hidden = false;
}

export function hideBanner() { $("#banner").hidden = true; }

let toastTimer = null;
export function toast(text) {
  const element = $("#toast");
  element.textContent = text; element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { element.hidden = true; }, 2500);
}

export function showEmpty(text) {
  $("#empty").hidden = false;
  $("#empty-text").textContent = text;
}

export function showSignIn() {
  $("#signin").hidden = false;
  $("#empty").hidden = false;
  $("#empty-text").textContent = "";
  $("#token").focus();
}
