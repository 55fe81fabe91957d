// latentedit studio: the page. Holds the edit state, builds the recipe, talks to the JSON API.
//
// Requests: every control is a "channel" with at most one request in flight. A change while its
// request runs only marks the channel pending; when the answer comes, one more request is sent
// with the state as it is then (so the newest value always wins and nothing queues up). Every
// request carries a sequence number; the server answers {"superseded": true} to work that a newer
// request of the same stream has overtaken, and the page never shows an answer older than the one
// on screen.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const clientId = Math.random().toString(36).slice(2) + Date.now().toString(36);
  const S = {
    info: null,
    start: { seed: 0, truncation: 0.7 },
    strengths: {},            // direction -> strength
    keep: new Set(),          // directions held fixed while moving the others
    accessory: null,
    transfer: { component: "", seed: 1, truncation: 0.7 },
    layers: {},               // name -> {strength, colour: "#rrggbb", on: bool}
    regionColours: {},        // region -> "#rrggbb"
    overlay: "",
    seq: 0,
    shown: { main: 0, mask: 0, source: 0 },
    srcSeq: 0,
    shownRecipe: null,
    shownImage: null,
    channels: {},
    stats: { slider: [], layer: [], other: [] },   // ms from the input event to the image on screen
    detail: [],                                     // {kind, total, answered (response in), server}
    inFlight: 0,
  };

  // ---- helpers -------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c);
    return node;
  }
  const hexToRgb = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.classList.toggle("hidden", !message);
  }
  function status(text) { $("status").textContent = text; }
  async function api(url, options) {
    const r = await fetch(url, options);
    let body = null;
    const type = r.headers.get("Content-Type") || "";
    if (type.startsWith("application/json")) body = await r.clone().json().catch(() => null);  // r stays readable
    if (!r.ok) throw new Error((body && body.error) || `HTTP ${r.status}`);
    return { r, body };
  }
  const postJSON = (url, obj) => api(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });

  // ---- the recipe ----------------------------------------------------------------------------
  function recipe() {
    const directions = [];
    for (const [name, strength] of Object.entries(S.strengths)) {
      if (strength !== 0) directions.push({ name, strength, keep: [...S.keep].filter((k) => k !== name) });
    }
    const r = {
      format: "latentedit-recipe", version: 1, model: S.info.model, start: S.start, directions,
      accessory: S.accessory ? { kind: S.accessory } : null,
      transfer: S.transfer.component ? { component: S.transfer.component,
        source: { seed: S.transfer.seed, truncation: S.transfer.truncation } } : null,
      layers: null,
    };
    const names = Object.keys(S.layers);
    const colours = [];
    for (const n of names) if (S.layers[n].on) colours.push({ target: n, rgb: hexToRgb(S.layers[n].colour) });
    for (const [region, c] of Object.entries(S.regionColours)) {
      if (!(region in S.layers)) colours.push({ target: region, rgb: hexToRgb(c) });
    }
    if (names.length || colours.length) {
      r.layers = { s_ref: 1.0, strengths: Object.fromEntries(names.map((n) => [n, S.layers[n].strength])), colours };
    }
    return r;
  }

  // ---- requests: one in flight per channel, newest wins ----------------------------------------
  function channel(name) {
    return S.channels[name] || (S.channels[name] = { busy: false, pending: false, inputAt: 0 });
  }
  function send(name, stream, url, makeBody, onResult) {
    const ch = channel(name);
    if (ch.busy) { ch.pending = true; return; }
    ch.busy = true;
    ch.pending = false;
    S.inFlight++;
    const seq = ++S.seq;
    const inputAt = ch.inputAt;
    const body = makeBody();
    postJSON(url, { ...body, seq, client: clientId, stream })
      .then(({ body: j }) => (j.superseded || seq < S.shown[stream] ? null
        : onResult(j, seq, inputAt, body, performance.now())))
      .catch((e) => showError(e.message))
      .finally(() => {
        ch.busy = false;
        S.inFlight--;
        if (ch.pending) send(name, stream, url, makeBody, onResult);
      });
  }
  const kindOf = (name) => (name.startsWith("dir:") ? "slider"
    : name.startsWith("layer:") || name.startsWith("colour:") ? "layer" : "other");

  function changed(name) {
    channel(name).inputAt = performance.now();
    send(name, "main", "/api/render", () => ({ recipe: recipe() }), async (j, seq, inputAt, body, answered) => {
      if (seq <= S.srcSeq) return;       // a newer answer is already on its way to the screen
      S.srcSeq = seq;
      const view = $("view");
      view.src = j.image;
      await view.decode().catch(() => {});
      if (S.srcSeq !== seq) return;      // replaced while decoding
      S.shown.main = seq;
      S.shownRecipe = body.recipe;
      S.shownImage = j.image;
      const ms = performance.now() - inputAt;
      const server = j.ms.wait + j.ms.compute + j.ms.png;
      S.stats[kindOf(name)].push(ms);
      S.detail.push({ kind: kindOf(name), total: ms, answered: answered - inputAt, server });
      if (S.detail.length > 500) S.detail.shift();
      showError("");
      status(`${kindOf(name)}: ${ms.toFixed(0)} ms to screen (server ${server.toFixed(1)} ms)`);
      const imageStages = body.recipe.transfer || body.recipe.layers;
      $("latents-note").textContent = imageStages
        ? "note: transfer and layers act on the image; the latents hold the code before them." : "";
    });
    if (S.overlay) refreshMask();
  }
  function refreshMask() {
    if (!S.overlay) { $("overlay-img").classList.add("hidden"); return; }
    send("mask", "mask", "/api/mask", () => ({ recipe: recipe(), mask: S.overlay }), (j, seq) => {
      S.shown.mask = seq;
      const img = $("overlay-img");
      img.src = j.image;
      img.classList.toggle("hidden", !S.overlay);
    });
  }
  function refreshSource() {
    if (!S.transfer.component) return;
    send("source", "source", "/api/render",
      () => ({ recipe: { start: { seed: S.transfer.seed, truncation: S.transfer.truncation } } }),
      (j, seq) => { S.shown.source = seq; $("source-thumb").src = j.image; $("source-thumb").classList.remove("hidden"); });
  }

  // ---- building the controls -----------------------------------------------------------------
  function buildDirections() {
    const box = $("directions");
    box.replaceChildren();
    for (const d of S.info.directions) {
      if (!d.available) {
        box.append(el("div", { class: "dir", title: d.reason }, el("span", { class: "name muted" }, d.name),
          el("span", { class: "muted small" }, "unavailable")));
        continue;
      }
      const out = el("output", {}, "0.00");
      const row = el("div", { class: "dir" });
      const slider = el("input", { type: "range", min: "-3", max: "3", step: "0.05", value: "0",
        id: `dir-${d.name}`, "data-direction": d.name, "aria-label": d.name });
      const apply = () => {
        const v = parseFloat(slider.value);
        S.strengths[d.name] = v;
        out.textContent = v.toFixed(2);
        row.classList.toggle("moved", v !== 0);
        changed(`dir:${d.name}`);
      };
      slider.addEventListener("input", apply);
      slider.addEventListener("dblclick", () => { slider.value = "0"; apply(); });
      const keep = el("input", { type: "checkbox", id: `keep-${d.name}`, title: `keep ${d.name} fixed` });
      keep.addEventListener("change", () => {
        if (keep.checked) S.keep.add(d.name); else S.keep.delete(d.name);
        changed("keep");
      });
      row.append(el("label", { class: "name", for: `dir-${d.name}`, title: d.name }, d.name), slider, out,
        el("label", { class: "keep" }, keep, " keep"));
      box.append(row);
    }
    $("reset-directions").addEventListener("click", () => {
      for (const s of box.querySelectorAll("input[type=range]")) s.value = "0";
      for (const o of box.querySelectorAll("output")) o.textContent = "0.00";
      for (const r of box.querySelectorAll(".dir")) r.classList.remove("moved");
      S.strengths = {};
      changed("reset");
    });
  }

  function buildAccessories() {
    const box = $("accessories");
    const options = [{ kind: "", available: true, reason: null }, ...S.info.accessories];
    const labels = { "": "none", mask: "mask", sunglasses: "sunglasses", frame_glasses: "frame glasses" };
    box.replaceChildren();
    for (const a of options) {
      const radio = el("input", { type: "radio", name: "accessory", value: a.kind, id: `acc-${a.kind || "none"}`,
        disabled: !a.available, checked: a.kind === "" });
      radio.addEventListener("change", () => { S.accessory = radio.value || null; changed("accessory"); });
      const label = el("label", { class: `accessory${a.available ? "" : " disabled"}`, title: a.reason || "" },
        radio, ` ${labels[a.kind] || a.kind}`);
      // the reason without the bundle's path (shown in full on hover)
      if (!a.available) label.append(el("span", { class: "reason" }, `unavailable: ${a.reason.replace(/^\/\S*: /, "")}`));
      box.append(label);
    }
  }

  function buildLayers() {
    const names = S.info.directions.filter((d) => d.available).map((d) => d.name);
    $("layer-add-name").replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    $("region-add-name").replaceChildren(...S.info.regions.map((n) => el("option", { value: n }, n)));
    $("layer-add").addEventListener("click", () => addLayer($("layer-add-name").value));
    $("region-add").addEventListener("click", () => addRegionColour($("region-add-name").value));
  }
  function addLayer(name) {
    if (!name || name in S.layers) return;
    S.layers[name] = { strength: 1.0, colour: "#c83232", on: false };
    const out = el("output", {}, "1.00");
    const slider = el("input", { type: "range", min: "-3", max: "3", step: "0.05", value: "1",
      id: `layer-${name}`, "aria-label": `layer ${name}` });
    slider.addEventListener("input", () => {
      S.layers[name].strength = parseFloat(slider.value);
      out.textContent = S.layers[name].strength.toFixed(2);
      changed(`layer:${name}`);
    });
    const colour = el("input", { type: "color", value: "#c83232", id: `layer-colour-${name}`, title: "layer colour" });
    const on = el("input", { type: "checkbox", title: "colour this layer" });
    colour.addEventListener("input", () => { S.layers[name].colour = colour.value; if (S.layers[name].on) changed(`colour:${name}`); });
    on.addEventListener("change", () => { S.layers[name].on = on.checked; changed(`colour:${name}`); });
    const row = el("div", { class: "layer" }, el("span", { title: name }, name), slider, out, colour, on,
      el("button", { type: "button", title: "remove", onclick: () => { delete S.layers[name]; row.remove(); changed("layers"); } }, "x"));
    $("layers").append(row);
    changed(`layer:${name}`);
  }
  function addRegionColour(region) {
    if (!region || region in S.regionColours) return;
    S.regionColours[region] = "#3c2814";
    const colour = el("input", { type: "color", value: "#3c2814", id: `region-colour-${region}` });
    colour.addEventListener("input", () => { S.regionColours[region] = colour.value; changed(`colour:${region}`); });
    const row = el("div", { class: "region" }, el("span", {}, region), colour,
      el("button", { type: "button", title: "remove",
        onclick: () => { delete S.regionColours[region]; row.remove(); changed("regions"); } }, "x"));
    $("region-colours").append(row);
    changed(`colour:${region}`);
  }

  function buildStart() {
    const seed = $("seed"), trunc = $("truncation");
    const fromSeed = () => {
      const v = Math.max(0, Math.min(4294967295, Math.floor(Number(seed.value) || 0)));
      S.start = { seed: v, truncation: parseFloat(trunc.value) };
      $("origin").textContent = `seed ${v}, truncation ${S.start.truncation.toFixed(2)}`;
      $("input-thumb").classList.add("hidden");
      changed("start");
    };
    seed.addEventListener("change", fromSeed);
    trunc.addEventListener("input", () => { $("truncation-value").textContent = Number(trunc.value).toFixed(2); fromSeed(); });
    $("random-seed").addEventListener("click", () => { seed.value = String(Math.floor(Math.random() * 100000)); fromSeed(); });
    $("latent-file").addEventListener("change", (e) => upload(e.target, "latents"));
    $("image-file").addEventListener("change", (e) => upload(e.target, "image"));
    const inv = S.info.invert;
    $("invert-mode").textContent = inv.mode === "encoder" ? "images are inverted by the bundle's encoder"
      : `no encoder in this bundle: images are inverted by projection (${inv.steps} steps, a few seconds)`;
  }
  async function upload(input, what) {
    const file = input.files && input.files[0];
    if (!file) return;
    const limit = S.info.limits.upload_bytes;
    if (file.size > limit) {
      showError(`too large: ${file.name} is ${(file.size / 1048576).toFixed(1)} MB (at most ${limit / 1048576} MB)`);
      input.value = "";
      return;
    }
    const q = `filename=${encodeURIComponent(file.name)}` + (what === "latents" ? `&index=${Number($("latent-index").value) || 0}` : "");
    status(what === "image" ? "inverting the image..." : "reading the latents...");
    try {
      const { body } = await api(`/api/upload/${what}?${q}`, { method: "POST", body: file });
      S.start = body.start;
      $("origin").textContent = body.start.origin;
      const thumb = $("input-thumb");
      if (body.input) { thumb.src = body.input; thumb.classList.remove("hidden"); } else thumb.classList.add("hidden");
      if (body.notes && body.notes.length) status(body.notes.join("; "));
      showError("");
      changed("start");
    } catch (e) {
      showError(e.message);
      status("");
    } finally {
      input.value = "";
    }
  }

  function buildTransferAndMasks() {
    const comp = $("transfer-component"), overlay = $("overlay");
    for (const r of S.info.regions) {
      comp.append(el("option", { value: r }, r));
      overlay.append(el("option", { value: r }, `part: ${r}`));
    }
    comp.addEventListener("change", () => { S.transfer.component = comp.value; refreshSource(); changed("transfer"); });
    $("transfer-seed").addEventListener("change", () => {
      S.transfer.seed = Math.max(0, Math.floor(Number($("transfer-seed").value) || 0));
      refreshSource();
      if (S.transfer.component) changed("transfer");
    });
    overlay.addEventListener("change", () => { S.overlay = overlay.value; refreshMask(); });
    $("opacity").addEventListener("input", () => { $("overlay-img").style.opacity = $("opacity").value; });
    $("overlay-img").style.opacity = $("opacity").value;
    S.transfer.seed = Number($("transfer-seed").value);
  }
  function showComponents() {
    const st = S.info.components;
    $("components").textContent = st === "ready" ? "" : st === "fitting"
      ? "part clusters: being fitted (about 10 s, once); parts wait for them"
      : st === "not started" ? "part clusters: fitted on the first use of a part (about 10 s, once)"
        : `part clusters: ${st}`;
    if (st === "fitting") {
      setTimeout(async () => {
        try { S.info.components = (await api("/api/info")).body.components; } catch (e) { /* keep polling */ }
        showComponents();
      }, 2000);
    }
  }

  // ---- downloads ---------------------------------------------------------------------------------
  function save(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  function dataUrlBlob(url) {
    const bytes = atob(url.slice(url.indexOf(",") + 1));
    const arr = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) arr[i] = bytes.charCodeAt(i);
    return new Blob([arr], { type: "image/png" });
  }
  async function recipeText() {
    const { body } = await postJSON("/api/recipe", { recipe: S.shownRecipe });
    return JSON.stringify(body, null, 1) + "\n";
  }
  function buildDownloads() {
    $("dl-png").addEventListener("click", async () => {
      if (S.shownImage) save(dataUrlBlob(S.shownImage), "latentedit.png");
    });
    for (const fmt of ["json", "npy"]) {
      $(`dl-${fmt}`).addEventListener("click", async () => {
        try {
          const { r } = await api(`/api/latents?format=${fmt}`, { method: "POST",
            headers: { "Content-Type": "application/json" }, body: JSON.stringify({ recipe: S.shownRecipe }) });
          save(await r.blob(), `latents.${fmt}`);
        } catch (e) { showError(e.message); }
      });
    }
    $("dl-recipe").addEventListener("click", async () => {
      try { save(new Blob([await recipeText()], { type: "application/json" }), "recipe.json"); } catch (e) { showError(e.message); }
    });
  }

  // ---- start -------------------------------------------------------------------------------------
  async function init() {
    try {
      S.info = (await api("/api/info")).body;
    } catch (e) {
      showError(`cannot reach the server: ${e.message}`);
      return;
    }
    const m = S.info.model;
    $("model").textContent = `model ${m.path} (${m.resolution} px, generator ${m.generator.slice(0, 12)}), ` +
      `${S.info.directions.length} directions`;
    buildStart();
    buildAccessories();
    buildTransferAndMasks();
    buildDirections();
    buildLayers();
    buildDownloads();
    showComponents();
    changed("start");
  }

  // For tests and scripts (tests/test_studio_browser.py): read-only views and the page's own actions.
  window.studio = {
    state: S,
    recipe,
    recipeText,
    idle: () => S.inFlight === 0 && Object.values(S.channels).every((c) => !c.busy && !c.pending),
    stats: () => S.stats,
    addLayer,
    addRegionColour,
  };
  document.addEventListener("DOMContentLoaded", init);
})();
