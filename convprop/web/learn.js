// convprop serve, /learn: the first convolution's forward and backward for the user's digit, number by
// number, from /api/learn. Plain JavaScript, no external files: works offline.
"use strict";

const STROKE_WIDTH = 22;
const $ = (id) => document.getElementById(id);
const drawCanvas = $("draw");
const ctx = drawCanvas.getContext("2d");
const state = { picture: null, hasInk: false, last: null, pointerId: null, row: 14, col: 14, timer: null,
                inFlight: false, queued: false, data: null };

// Numbers: four significant digits (gradients are small), as Number() reads them back.
const fmt = (v) => (v === 0 ? "0" : Number(v.toPrecision(4)).toString());

function table(id, rows) {
  const t = $(id);
  t.className = "grid-numbers";
  t.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    for (const v of row) {
      const td = document.createElement("td");
      td.textContent = fmt(v);
      td.dataset.value = String(v); // the full float, for anyone checking
      tr.append(td);
    }
    return tr;
  }));
}

function map(canvas, rows, signed) { // gray for the input; blue–white–red for gradients
  const h = rows.length, w = rows[0].length;
  canvas.width = w;
  canvas.height = h;
  let lo = Infinity, hi = -Infinity;
  for (const row of rows) for (const v of row) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const limit = Math.max(Math.abs(lo), Math.abs(hi));
  const c = canvas.getContext("2d");
  const img = c.createImageData(w, h);
  for (let y = 0, p = 0; y < h; y++) {
    for (let x = 0; x < w; x++, p += 4) {
      let rgb;
      if (signed) {
        const t = limit > 0 ? rows[y][x] / limit : 0, a = Math.abs(t);
        rgb = t >= 0 ? [255, 255 * (1 - a), 255 * (1 - a)] : [255 * (1 - a), 255 * (1 - a), 255];
      } else {
        const g = hi > lo ? (255 * (rows[y][x] - lo)) / (hi - lo) : 0;
        rgb = [g, g, g];
      }
      img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2]; img.data[p + 3] = 255;
    }
  }
  c.putImageData(img, 0, 0);
}

function outline(canvas, row, col, h, w, colour) { // a rectangle over pixels [row, row + h) × [col, col + w)
  const c = canvas.getContext("2d");
  c.strokeStyle = colour;
  c.lineWidth = 0.25;
  c.strokeRect(col + 0.125, row + 0.125, w - 0.25, h - 0.25);
}

function show(data) {
  state.data = data;
  const input = data.x_padded.slice(data.pads[0], data.pads[0] + data.grad_input.length)
    .map((row) => row.slice(data.pads[1], data.pads[1] + data.grad_input[0].length));
  const pick = $("pick");
  map(pick, input, false);
  const kh = data.kernel.length, kw = data.kernel[0].length;
  outline(pick, data.input_row, data.input_col, 1, 1, "#ff3b30"); // the picked pixel
  outline(pick, data.row - data.pads[0], data.col - data.pads[1], kh, kw, "#32d74b"); // the forward window
  $("picked").textContent = `class ${data.target_class}, layer ${data.path}, channel o = ${data.channel}: ` +
    `output pixel (i, j) = (${data.row}, ${data.col}), input pixel (r, s) = (${data.input_row}, ${data.input_col})`;
  table("fwd-window", data.window);
  table("fwd-kernel", data.kernel);
  $("fwd-bias").textContent = fmt(data.bias);
  $("fwd-sum").textContent = fmt(data.window_sum);
  $("fwd-value").textContent = fmt(data.value);
  map($("bwd-dy"), data.grad_output, true);
  // the window of dy_full at (r + p, s + p) covers dE/dy rows r + p − (KH − 1) .. r + p (zeros outside)
  outline($("bwd-dy"), data.input_row + data.pads[0] - (kh - 1), data.input_col + data.pads[1] - (kw - 1), kh, kw, "#1f9d3a");
  table("bwd-window", data.grad_window);
  table("bwd-rotated", data.rotated);
  $("bwd-share").textContent = fmt(data.contributions[data.channel]);
  $("bwd-shares").textContent = data.contributions.map(fmt).join(" + ").replace(/\+ -/g, "− ");
  $("bwd-sum").textContent = fmt(data.contributions.reduce((a, b) => a + b, 0));
  $("bwd-value").textContent = fmt(data.grad_input_value);
  map($("bwd-dx"), data.grad_input, true);
  table("dk-library", data.grad_kernel);
  table("dk-rule", data.grad_kernel_rule);
  $("status").textContent = "Click another pixel, or change the class or the channel.";
  const select = $("target");
  if (select.options.length === 1) {
    data.classes.forEach((name, i) => select.add(new Option(name, String(i))));
  }
  document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1); // answers shown so far
}

async function send() {
  if (state.inFlight) { state.queued = true; return; }
  if (!state.picture) return;
  state.inFlight = true;
  const target = $("target").value === "" ? null : Number($("target").value);
  const body = { ...state.picture, target, channel: Number($("channel").value) || 0,
                 row: state.row, col: state.col, input_row: state.row, input_col: state.col };
  try {
    const response = await fetch("/api/learn", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (response.ok) show(data);
    else $("status").textContent = data.error || `the server answered ${response.status}`;
  } catch (err) {
    $("status").textContent = `cannot reach the server (${err.message})`;
  } finally {
    state.inFlight = false;
    if (state.queued) { state.queued = false; send(); }
  }
}

// --- picking a pixel --------------------------------------------------------------------------
$("pick").addEventListener("click", (event) => {
  if (!state.data) return;
  const rect = event.currentTarget.getBoundingClientRect();
  const h = state.data.grad_input.length, w = state.data.grad_input[0].length;
  const r = Math.min(h - 1, Math.floor(((event.clientY - rect.top) / rect.height) * h));
  const s = Math.min(w - 1, Math.floor(((event.clientX - rect.left) / rect.width) * w));
  const oh = state.data.grad_output.length, ow = state.data.grad_output[0].length;
  state.row = Math.min(r, oh - 1); // a "valid" convolution has fewer output than input pixels
  state.col = Math.min(s, ow - 1);
  send();
});
$("target").addEventListener("change", send);
$("channel").addEventListener("change", send);

// --- drawing (as on the main page) ------------------------------------------------------------
function resetCanvas() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, drawCanvas.width, drawCanvas.height);
  Object.assign(ctx, { strokeStyle: "#fff", fillStyle: "#fff", lineWidth: STROKE_WIDTH, lineCap: "round", lineJoin: "round" });
}
function point(event) {
  const rect = drawCanvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * (drawCanvas.width / rect.width), (event.clientY - rect.top) * (drawCanvas.height / rect.height)];
}
drawCanvas.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || state.pointerId !== null) return;
  event.preventDefault();
  drawCanvas.setPointerCapture(event.pointerId);
  state.pointerId = event.pointerId;
  if (!state.hasInk) resetCanvas(); // drawing replaces a picture brought from the main page
  const p = point(event);
  ctx.beginPath();
  ctx.arc(p[0], p[1], STROKE_WIDTH / 2, 0, 2 * Math.PI);
  ctx.fill();
  state.last = p;
  state.hasInk = true;
});
drawCanvas.addEventListener("pointermove", (event) => {
  if (event.pointerId !== state.pointerId) return;
  const p = point(event);
  ctx.beginPath();
  ctx.moveTo(state.last[0], state.last[1]);
  ctx.lineTo(p[0], p[1]);
  ctx.stroke();
  state.last = p;
});
function endStroke(event) {
  if (event.pointerId !== state.pointerId) return;
  state.pointerId = null;
  state.picture = { png: drawCanvas.toDataURL("image/png") };
  send();
}
drawCanvas.addEventListener("pointerup", endStroke);
drawCanvas.addEventListener("pointercancel", endStroke);
$("clear").addEventListener("click", () => { resetCanvas(); state.hasInk = false; state.picture = null; });

resetCanvas();
let saved = null;
try { saved = JSON.parse(sessionStorage.getItem("convprop-picture") || "null"); } catch (e) { saved = null; }
if (saved && typeof saved === "object") { // the digit last drawn on the main page
  state.picture = saved;
  if (typeof saved.png === "string") {
    const img = new Image();
    img.onload = () => ctx.drawImage(img, 0, 0, drawCanvas.width, drawCanvas.height);
    img.src = saved.png;
  }
  $("status").textContent = "Your digit from the main page.";
  send();
}
