/* The admin's terminal recording replay: asciinema-player on the cast named by #recording-player. */
(() => {
  "use strict";
  const mount = document.getElementById("recording-player");
  if (!window.AsciinemaPlayer || !mount) return;
  window.AsciinemaPlayer.create(mount.dataset.castUrl, mount, { fit: "width", idleTimeLimit: 2, controls: true });
})();
