/* The hint form asks about the step the learner has open (templates/judge/_hints.html).
 *
 * The rule: the step the learner last expanded or clicked in, as long as it is still open and
 * unlocked; otherwise the first open step that is unlocked; otherwise the step the server chose
 * when it drew the page. The form's hidden `step` field carries that step's id and the button
 * says which step it is ("Get a hint for step 2"). The server checks the step again
 * (judge/hints.py step_for_hint): a locked step or one of another lab is refused.
 *
 * Steps are the session page's `.step-item` list items; each holds a <details> and its judge box
 * ([data-judge-step] = the step's id, with data-locked), which HTMX swaps when a check finishes.
 */
(() => {
  "use strict";

  const form = document.querySelector("[data-hint-form]");
  const input = form?.querySelector("[data-hint-step]");
  if (!form || !input) return;
  const label = form.querySelector("[data-hint-for]");
  const drawn = { id: input.value, label: label ? label.textContent : "" };
  let chosen = null; // the step item the learner last expanded or clicked in

  const stepItems = () => [...document.querySelectorAll(".steps > .step-item")];
  const judgeBox = (item) => item.querySelector("[data-judge-step]");
  const isOpen = (item) => Boolean(item.querySelector(":scope > details")?.open);
  const isLocked = (item) => judgeBox(item)?.dataset.locked === "true";
  const usable = (item) => Boolean(item && item.isConnected && judgeBox(item) && isOpen(item) && !isLocked(item));

  function currentItem() {
    return usable(chosen) ? chosen : stepItems().find(usable) || null;
  }

  function update() {
    const item = currentItem();
    if (!item) {
      input.value = drawn.id;
      if (label) label.textContent = drawn.label;
      return;
    }
    input.value = judgeBox(item).dataset.judgeStep;
    const number = item.querySelector(".step-number")?.textContent.trim().toLowerCase();
    if (label && number) label.textContent = `for ${number}`;
  }

  function note(event) {
    const item = event.target instanceof Element ? event.target.closest(".steps > .step-item") : null;
    // A closed step only counts once it opens (the toggle event below): tabbing past steps or
    // clicking a closed step's summary does not move the hint away from the open one.
    if (!item || !isOpen(item)) return;
    chosen = item;
    update();
  }

  // `toggle` does not bubble: listen in the capture phase for every step's <details>.
  document.addEventListener("toggle", (event) => {
    const details = event.target;
    if (!(details instanceof HTMLDetailsElement)) return;
    const item = details.parentElement?.matches(".steps > .step-item") ? details.parentElement : null;
    if (!item) return;
    if (details.open) chosen = item;
    update();
  }, true);
  document.addEventListener("click", note);
  document.addEventListener("focusin", note);
  // A finished check can unlock (or, after a staff edit, lock) steps: their boxes are swapped in.
  document.addEventListener("htmx:afterSettle", update);
  // Right before the request leaves, in case anything changed without an event.
  form.addEventListener("htmx:configRequest", (event) => {
    update();
    event.detail.parameters.step = input.value;
  });
  update();
})();
