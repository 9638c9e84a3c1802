// convprop serve: draw on a canvas, send it to /api/predict, draw what comes back.
// Plain JavaScript, no build step, no external files: the page works offline.
"use strict";

const DEBOUNCE_MS = 150; // at most one prediction per 150 ms while drawing, and one after the last stroke
const STROKE_WIDTH = 22; // on the 280 px canvas; about MNIST's stroke once the digit is scaled to 20 px

const $ = (id) => document.getElementById(id);
const drawCanvas = $("draw");
const ctx = drawCanvas.getContext("2d");

const state = {
  model: null,
  hasInk: false,
  last: null, // last pointer position while drawing
  pointerId: null,
  source: null, // () => request body for the current picture (the canvas or an uploaded file)
  timer: null,
  inFlight: false,
  queued: false, // a newer picture is waiting for the request in flight: the latest wins
  generation: 0, // bumped by "clear" so late answers for an old picture are ignored
  mapCanvases: [], // per conv layer: the canvases, created on the first answer
};

// --- colour maps -------------------------------------------------------------------------------
// Viridis (matplotlib's default, perceptually uniform) from 9 anchors; a blue–white–red map for weights.
const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                 [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
const DIVERGING = [[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247],
                   [253, 219, 199], [239, 138, 98], [178, 24, 43]];

function lut(anchors) {
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (anchors.length - 1);
    const k = Math.min(Math.floor(t), anchors.length - 2);
    const f = t - k;
    for (let c = 0; c < 3; c++) table[3 * i + c] = anchors[k][c] + f * (anchors[k + 1][c] - anchors[k][c]);
  }
  return table;
}
const LUT_VIRIDIS = lut(VIRIDIS);
const LUT_DIVERGING = lut(DIVERGING);
const LUT_GRAY = lut([[0, 0, 0], [255, 255, 255]]);

// Draw a 2-D array (rows of numbers) onto a canvas of the same size, values mapped from lo..hi.
function heatmap(canvas, rows, table, lo, hi) {
  const h = rows.length, w = rows[0].length;
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const c = canvas.getContext("2d");
  const img = c.createImageData(w, h);
  const scale = hi > lo ? 255 / (hi - lo) : 0;
  let p = 0;
  for (let y = 0; y < h; y++) {
    const row = rows[y];
    for (let x = 0; x < w; x++, p += 4) {
      const i = 3 * Math.max(0, Math.min(255, Math.round((row[x] - lo) * scale)));
      img.data[p] = table[i];
      img.data[p + 1] = table[i + 1];
      img.data[p + 2] = table[i + 2];
      img.data[p + 3] = 255;
    }
  }
  c.putImageData(img, 0, 0);
}

function range(rows) {
  let lo = Infinity, hi = -Infinity;
  for (const row of rows) for (const v of row) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

// --- drawing -----------------------------------------------------------------------------------
function resetCanvas() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, drawCanvas.width, drawCanvas.height);
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineWidth = STROKE_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

function canvasPoint(event) {
  const rect = drawCanvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * (drawCanvas.width / rect.width),
          (event.clientY - rect.top) * (drawCanvas.height / rect.height)];
}

function stroke(from, to) {
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

drawCanvas.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || state.pointerId !== null) return;
  event.preventDefault();
  drawCanvas.setPointerCapture(event.pointerId);
  state.pointerId = event.pointerId;
  if (state.source !== canvasBody) { // drawing after an upload starts a fresh picture
    resetCanvas();
    state.source = canvasBody;
  }
  const p = canvasPoint(event);
  ctx.beginPath();
  ctx.arc(p[0], p[1], STROKE_WIDTH / 2, 0, 2 * Math.PI);
  ctx.fill();
  state.last = p;
  state.hasInk = true;
  schedule();
});

drawCanvas.addEventListener("pointermove", (event) => {
  if (event.pointerId !== state.pointerId) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (events.length ? events : [event])) {
    const p = canvasPoint(e);
    stroke(state.last, p);
    state.last = p;
  }
  schedule();
});

function endStroke(event) {
  if (event.pointerId !== state.pointerId) return;
  state.pointerId = null;
  state.last = null;
  schedule();
}
drawCanvas.addEventListener("pointerup", endStroke);
drawCanvas.addEventListener("pointercancel", endStroke);

function canvasBody() {
  return state.hasInk ? { png: drawCanvas.toDataURL("image/png") } : null;
}

// --- asking the server: one request in flight, the latest picture wins -----------------------------
function schedule() {
  if (state.timer === null) state.timer = setTimeout(() => { state.timer = null; send(); }, DEBOUNCE_MS);
}

async function send() {
  if (state.inFlight) { state.queued = true; return; }
  const body = state.source ? state.source() : null;
  if (!body) return;
  const generation = state.generation;
  state.inFlight = true;
  try {
    const response = await fetch("/api/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (generation !== state.generation) return; // cleared meanwhile
    if (!response.ok) showError(data.error || `the server answered ${response.status}`);
    else { showResult(data); if (window.convpropWhy) window.convpropWhy.picture(body); } // why.js: the "why" panel
  } catch (err) {
    if (generation === state.generation) showError(`cannot reach the server (${err.message}); is convprop serve still running?`);
  } finally {
    state.inFlight = false;
    if (state.queued) { state.queued = false; send(); }
  }
}

function setStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

function showError(message) {
  setStatus(message, true);
  $("prediction").textContent = "?";
}

// --- showing the answer -----------------------------------------------------------------------
function buildBars(classes) {
  const list = $("probabilities");
  list.replaceChildren();
  classes.forEach((name, i) => {
    const li = document.createElement("li");
    li.className = "prob";
    li.dataset.testid = `prob-${i}`;
    li.dataset.class = name;
    li.dataset.value = "0";
    li.innerHTML = '<span class="prob-label"></span><span class="prob-track" aria-hidden="true">' +
                   '<span class="prob-fill"></span></span><span class="prob-value">–</span>';
    li.querySelector(".prob-label").textContent = name;
    list.append(li);
  });
}

function showResult(data) {
  $("prediction").textContent = data.prediction;
  const probs = data.probabilities;
  const best = probs[data.index];
  $("confidence").textContent = `${(100 * best).toFixed(1)}% sure`;
  $("timing").textContent = `${data.milliseconds.toFixed(1)} ms on the server`;
  setStatus(state.source === canvasBody ? "Keep drawing, or clear and try another digit." : $("status").textContent);
  const items = $("probabilities").children;
  probs.forEach((p, i) => {
    const li = items[i];
    if (!li) return;
    const percent = `${(100 * p).toFixed(1)}%`;
    li.dataset.value = String(p);
    li.classList.toggle("top", i === data.index);
    li.querySelector(".prob-fill").style.width = `${(100 * p).toFixed(2)}%`;
    li.querySelector(".prob-value").textContent = percent;
    li.setAttribute("aria-label", `${data.classes[i]}: ${percent}`);
  });
  heatmap($("input"), data.input, LUT_GRAY, 0, 1);
  showFeatureMaps(data.feature_maps);
}

function showFeatureMaps(layers) {
  const root = $("feature-maps");
  if (state.mapCanvases.length !== layers.length) {
    root.replaceChildren();
    state.mapCanvases = layers.map((layer, l) => {
      const section = document.createElement("div");
      section.className = "layer" + (layer.maps.length > 16 ? " small-maps" : "");
      const heading = document.createElement("h3");
      heading.textContent = layer.label;
      const grid = document.createElement("div");
      grid.className = "grid";
      const canvases = layer.maps.map((_, c) => {
        const canvas = document.createElement("canvas");
        canvas.dataset.testid = "feature-map";
        canvas.dataset.layer = String(l);
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `${layer.label}, channel ${c + 1}`);
        grid.append(canvas);
        return canvas;
      });
      section.append(heading, grid);
      root.append(section);
      return canvases;
    });
  }
  layers.forEach((layer, l) => {
    layer.maps.forEach((map, c) => {
      const [lo, hi] = range(map);
      heatmap(state.mapCanvases[l][c], map, LUT_VIRIDIS, lo, hi);
    });
  });
}

function showModel(model) {
  state.model = model;
  const convs = model.layers.filter((l) => l.type === "Conv2d").map((l) => l.config.out_channels);
  $("model-summary").textContent =
    `Model from run ${model.run} (${model.dataset}): ${model.layers.length} layers, ` +
    `convolutions with ${convs.join(" and ")} channels, ${model.parameters.toLocaleString("en")} parameters, ` +
    `${model.image_size.join(" × ")} input.`;
  buildBars(model.classes);
  if (!model.filters) return; // a model without a convolution has no filters to draw
  const [O, C] = model.filters.shape;
  const root = $("filters");
  root.replaceChildren();
  let limit = 0;
  for (const filter of model.filters.values) for (const kernel of filter) for (const row of kernel) for (const v of row) limit = Math.max(limit, Math.abs(v));
  for (let o = 0; o < O; o++) {
    for (let c = 0; c < C; c++) {
      const canvas = document.createElement("canvas");
      canvas.dataset.testid = "filter";
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `filter ${o + 1}` + (C > 1 ? `, input channel ${c + 1}` : ""));
      heatmap(canvas, model.filters.values[o][c], LUT_DIVERGING, -limit, limit);
      root.append(canvas);
    }
  }
}

// --- buttons ----------------------------------------------------------------------------------
$("clear").addEventListener("click", () => {
  state.generation++;
  state.queued = false;
  state.hasInk = false;
  state.source = canvasBody;
  resetCanvas();
  $("prediction").textContent = "–";
  $("confidence").textContent = "";
  $("timing").textContent = "";
  if (state.model) buildBars(state.model.classes);
  $("input").getContext("2d").clearRect(0, 0, 28, 28);
  if (window.convpropWhy) window.convpropWhy.clear();
  setStatus("Cleared. Draw a digit, or upload a photo of one.");
  drawCanvas.focus();
});

$("upload").addEventListener("click", () => $("file").click());

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const dataUrl = reader.result;
    state.generation++;
    state.hasInk = false;
    state.source = () => ({ png: dataUrl });
    const img = new Image();
    img.onload = () => { // show the upload in the drawing area, fitted and centred
      resetCanvas();
      const s = Math.min(drawCanvas.width / img.width, drawCanvas.height / img.height);
      const w = img.width * s, h = img.height * s;
      ctx.drawImage(img, (drawCanvas.width - w) / 2, (drawCanvas.height - h) / 2, w, h);
    };
    img.src = dataUrl;
    setStatus(`Showing ${file.name}. Draw on the canvas to start over.`);
    send();
  };
  reader.onerror = () => showError(`cannot read ${file.name}`);
  reader.readAsDataURL(file);
  $("file").value = ""; // choosing the same file again still fires "change"
});

resetCanvas();
state.source = canvasBody;
fetch("/api/model")
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`status ${r.status}`))))
  .then(showModel)
  .catch((err) => showError(`cannot load the model description (${err.message})`));
