// Judge boxes on the session page: keep a running check's streamed log scrolled to its end,
// unless the learner scrolled up to read it.
(function () {
  "use strict";
  if (window.labsJudge) return;
  window.labsJudge = true;
  var pinned = {};

  document.addEventListener("htmx:beforeSwap", function (event) {
    var log = event.detail.target && event.detail.target.querySelector("[data-judge-log]");
    if (log) {
      pinned[event.detail.target.id] = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    }
  });

  function follow(root) {
    (root || document).querySelectorAll("[data-judge-log]").forEach(function (log) {
      var box = log.closest(".judge-attempt");
      if (!box || pinned[box.id] !== false) log.scrollTop = log.scrollHeight;
    });
  }

  document.addEventListener("htmx:afterSettle", function () { follow(document); });
  document.addEventListener("DOMContentLoaded", function () { follow(document); });
})();
