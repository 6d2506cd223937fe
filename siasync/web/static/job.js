// Live updates of an active job's page from its Server-Sent Events. The page is complete without them:
// without JavaScript it refreshes itself every few seconds instead.
"use strict";
(function () {
  const root = document.getElementById("job");
  if (!root || !window.EventSource) return;
  const job = root.dataset.job, first = Number(root.dataset.first), last = Number(root.dataset.last);
  const band = root.dataset.band, collection = root.dataset.collection, grid = root.dataset.view === "grid";
  const filtered = root.dataset.filtered === "1";
  const ACTIVE = ["PENDING", "QUEUED", "EXECUTING", "HELD", "SUSPENDED"];
  const source = new EventSource(`/async/${job}/events?AFTER=${root.dataset.after}`);
  const text = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = value; };

  function filesize(n) {
    if (n === null || n === undefined || n < 0) return "";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }
  function when(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, " UTC") : "";
  }
  function wait(iso) {
    const seconds = (Date.parse(iso) - Date.now()) / 1000;
    if (seconds < 1) return "any moment now";
    if (seconds < 60) return `in about ${seconds.toFixed(0)} s`;
    if (seconds < 3600) return `in about ${(seconds / 60).toFixed(0)} min`;
    return `in about ${Math.floor(seconds / 3600)} h ${((seconds % 3600) / 60).toFixed(0)} min`;
  }

  source.addEventListener("phase", (e) => {
    const phase = JSON.parse(e.data).phase, el = document.getElementById("phase");
    el.textContent = phase;
    el.className = "phase phase-" + phase;
    if (!ACTIVE.includes(phase)) {
      source.close();
      if (phase === "DESTROYED") { text("eta", "the job has been destroyed"); return; }
      window.setTimeout(() => window.location.reload(), 300);  // the final page: download, table size, no abort
    }
  });

  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data), bar = document.getElementById("progress-bar");
    bar.max = Math.max(p.fields_total || 0, 1);
    bar.value = p.fields_done || 0;
    bar.textContent = `${p.fields_done || 0} of ${p.fields_total || 0}`;
    text("fields-done", p.fields_done || 0);
    text("products", p.products || 0);
    text("bytes", filesize(p.bytes || 0));
  });

  source.addEventListener("times", (e) => {
    const t = JSON.parse(e.data);
    text("started", when(t.startTime) || "not yet");
    text("quote", when(t.quote) || "unknown");
    text("ended", when(t.endTime) || "not yet");
    text("eta", t.quote && !t.endTime ? "done " + wait(t.quote) : "");
  });

  function productLink(r) {
    const span = document.createDocumentFragment(), a = document.createElement("a"), size = document.createElement("span");
    a.href = new URL(r.href).pathname;
    a.textContent = r["mime-type"].split("/").pop().toUpperCase();
    size.className = "muted";
    size.textContent = filesize(r.size);
    span.append(a, " ", size, " ");
    return span;
  }
  function thumb(r, field) {
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = `preview of ${r.image} in field ${field}`;
    img.src = new URL(r.href).pathname;
    return img;
  }

  source.addEventListener("result", (e) => {
    const r = JSON.parse(e.data), field = r.field;
    if (field === null || field === undefined || field < first || field > last) return;
    if (filtered && ((band && r.band !== band) || (collection && r.collection !== collection))) return;
    const section = document.getElementById("field-" + field);
    if (!section) return;
    const path = new URL(r.href).pathname;
    if (section.querySelector(`a[href="${CSS.escape(path)}"]`)) return;  // already on the page
    const list = section.querySelector(grid ? "ul.grid" : "ul.images");
    let item = Array.from(list.children).find((li) => li.dataset.image === r.image);
    const preview = r["mime-type"] === "image/png" || r["mime-type"] === "image/jpeg";
    if (!item) {
      item = document.createElement("li");
      item.dataset.image = r.image;
      const label = document.createElement("span"), products = document.createElement("span");
      if (grid) {
        label.textContent = `${r.collection || ""} ${r.band || ""}`;
      } else {
        const code = document.createElement("code");
        code.textContent = r.image;
        label.className = "image";
        label.append(code, ` ${r.collection || ""} ${r.band || ""}`);
      }
      products.className = "products";
      item.append(label, " ", products);
      list.append(item);
      const count = list.children.length;
      section.querySelector(".state").textContent = `${count} image${count === 1 ? "" : "s"}`;
    }
    if (preview && !item.querySelector("img.thumb")) item.prepend(thumb(r, field));
    (item.querySelector(".products") || item).append(productLink(r));
  });
})();
