// noVNC's RFB client as one ES module (static/vendor/novnc/rfb.bundle.js), bundled by
// deploy/scripts/vendor-assets.sh: one request instead of noVNC's ~40 module files.
export { default } from "@novnc/novnc";
