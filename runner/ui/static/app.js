// runner dashboard: pan and zoom of the DAG, and a running attempt's log followed live.
"use strict";

function zoomable(viewport) {
  const svg = viewport.querySelector("svg.zoomable");
  const full = { x: -10, y: -10, w: +svg.dataset.w, h: +svg.dataset.h };
  let box = { ...full };
  const apply = () => svg.setAttribute("viewBox", `${box.x} ${box.y} ${box.w} ${box.h}`);
  const zoom = (factor, cx = 0.5, cy = 0.5) => {
    const w = box.w * factor, h = box.h * factor;
    box = { x: box.x + (box.w - w) * cx, y: box.y + (box.h - h) * cy, w, h };
    apply();
  };
  // A big DAG starts readable: its top-left corner at a legible scale, not shrunk to fit.
  const rect = svg.getBoundingClientRect();
  // A small one is drawn at its natural size (1 unit = 1 pixel), not blown up to fill the box.
  if (rect.width && full.w / rect.width > 2.5) {
    box = { x: full.x, y: full.y, w: rect.width * 1.2, h: rect.height * 1.2 };
    apply();
  } else if (rect.width && full.w < rect.width && full.h < rect.height) {
    box = { x: full.x, y: full.y, w: rect.width, h: rect.height };
    apply();
  }
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    zoom(e.deltaY > 0 ? 1.2 : 1 / 1.2, (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
  window.addEventListener("pointerup", () => { setTimeout(() => { drag = null; }, 0); });
  svg.addEventListener("pointermove", (e) => {
    if (!drag || !(e.buttons & 1)) return;
    const r = svg.getBoundingClientRect();
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    box.x -= dx * box.w / r.width; box.y -= dy * box.h / r.height;
    drag.x = e.clientX; drag.y = e.clientY;
    apply();
  });
  svg.addEventListener("click", (e) => { if (drag && drag.moved) e.preventDefault(); }, true);
  viewport.querySelector("[data-zoom-in]").onclick = () => zoom(1 / 1.5);
  viewport.querySelector("[data-zoom-out]").onclick = () => zoom(1.5);
  viewport.querySelector("[data-zoom-fit]").onclick = () => { box = { ...full }; apply(); };
}

function followLog(pre) {
  const status = document.getElementById("live-status");
  const events = new EventSource(pre.dataset.stream);
  let first = true;
  events.addEventListener("append", (e) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const text = JSON.parse(e.data);
    if (first) { pre.textContent = text; first = false; } else { pre.append(text); }
    pre.dataset.length = pre.textContent.length;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  });
  events.addEventListener("end", (e) => {
    status.textContent = `the attempt ended: ${JSON.parse(e.data)}`;
    status.dataset.ended = "1";
    events.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-zoom]").forEach(zoomable);
  const pre = document.querySelector("pre#log[data-stream]");
  if (pre) followLog(pre);
});
