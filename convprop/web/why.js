// convprop serve: the "why" panel. After every prediction app.js hands over the picture it sent
// (window.convpropWhy.picture(body)); this asks /api/explain for the maps of the target class and draws
// them over the 28 × 28 input. Clicking a probability bar pins that class; clicking it again unpins.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const why = {
    body: null, // the last picture sent to /api/predict
    target: null, // a pinned class index, or null for the predicted class
    inFlight: false,
    queued: false,
    generation: 0,
  };

  // Heat colours: transparent → orange → yellow, drawn over the gray input; gradient × input: blue–white–red.
  function heat(t) {
    return [255, Math.round(80 + 175 * t), Math.round(40 * t)];
  }
  function diverging(t) { // t in [-1, 1]
    const a = Math.min(1, Math.abs(t));
    return t >= 0 ? [255, Math.round(255 * (1 - a)), Math.round(255 * (1 - a))]
                  : [Math.round(255 * (1 - a)), Math.round(255 * (1 - a)), 255];
  }

  function overlay(canvas, input, map) { // input and map: H × W arrays in [0, 1]
    const h = input.length, w = input[0].length;
    canvas.width = w;
    canvas.height = h;
    const c = canvas.getContext("2d");
    const img = c.createImageData(w, h);
    let total = 0;
    for (let y = 0, p = 0; y < h; y++) {
      for (let x = 0; x < w; x++, p += 4) {
        const g = 255 * input[y][x] * 0.6; // the digit, dimmed
        const a = map ? Math.max(0, Math.min(1, map[y][x])) : 0;
        const [r, gg, b] = heat(a);
        img.data[p] = g + a * (r - g);
        img.data[p + 1] = g + a * (gg - g);
        img.data[p + 2] = g + a * (b - g);
        img.data[p + 3] = 255;
        total += a;
      }
    }
    c.putImageData(img, 0, 0);
    canvas.dataset.heat = total.toFixed(4); // how much heat was drawn: for tests and curious readers
  }

  function signed(canvas, map) {
    const h = map.length, w = map[0].length;
    let limit = 0;
    for (const row of map) for (const v of row) limit = Math.max(limit, Math.abs(v));
    canvas.width = w;
    canvas.height = h;
    const c = canvas.getContext("2d");
    const img = c.createImageData(w, h);
    let total = 0;
    for (let y = 0, p = 0; y < h; y++) {
      for (let x = 0; x < w; x++, p += 4) {
        const t = limit > 0 ? map[y][x] / limit : 0;
        const [r, g, b] = diverging(t);
        img.data[p] = r; img.data[p + 1] = g; img.data[p + 2] = b; img.data[p + 3] = 255;
        total += Math.abs(t);
      }
    }
    c.putImageData(img, 0, 0);
    canvas.dataset.heat = total.toFixed(4);
  }

  function show(data) {
    const panel = $("why");
    panel.dataset.target = String(data.target);
    const pinned = why.target !== null;
    $("why-title").textContent = `Why “${data.target_class}”?`;
    $("why-note").textContent = pinned
      ? `Showing class ${data.target_class} (chosen; its logit is ${data.logit.toFixed(2)}). Click its bar again for the prediction.`
      : `Showing the predicted class (logit ${data.logit.toFixed(2)}). Click another class's bar to ask about it.`;
    overlay($("why-saliency"), data.input, data.saliency);
    overlay($("why-gradcam"), data.input, data.grad_cam);
    signed($("why-gxi"), data.gradient_x_input);
    $("why-gradcam-label").textContent = data.grad_cam_layer === null
      ? "Grad-CAM (no convolution in this model)" : `Grad-CAM of layer ${data.grad_cam_layer}`;
    for (const li of $("probabilities").children) {
      li.classList.toggle("why-target", li.dataset.testid === `prob-${data.target}`);
    }
  }

  async function send() {
    if (why.inFlight) { why.queued = true; return; }
    if (!why.body) return;
    const generation = why.generation;
    why.inFlight = true;
    try {
      const response = await fetch("/api/explain", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...why.body, target: why.target }),
      });
      const data = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
      if (generation !== why.generation) return;
      if (response.ok) show(data);
      else $("why-note").textContent = data.error || `the server answered ${response.status}`;
    } catch (err) {
      if (generation === why.generation) $("why-note").textContent = `cannot reach the server (${err.message})`;
    } finally {
      why.inFlight = false;
      if (why.queued) { why.queued = false; send(); }
    }
  }

  function makeBarsClickable() {
    for (const li of $("probabilities").children) {
      if (li.tabIndex !== 0) {
        li.tabIndex = 0;
        li.setAttribute("role", "button");
        li.title = "Explain this class";
      }
    }
  }

  function choose(li) {
    const index = Number(li.dataset.testid.replace("prob-", ""));
    why.target = why.target === index ? null : index;
    send();
  }

  $("probabilities").addEventListener("click", (event) => {
    const li = event.target.closest(".prob");
    if (li && why.body) choose(li);
  });
  $("probabilities").addEventListener("keydown", (event) => {
    const li = event.target.closest(".prob");
    if (li && why.body && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); choose(li); }
  });

  window.convpropWhy = {
    picture(body) { // called by app.js after each prediction
      why.body = body;
      makeBarsClickable();
      try { sessionStorage.setItem("convprop-picture", JSON.stringify(body)); } catch (e) { /* private mode */ }
      send();
    },
    clear() {
      why.generation++;
      why.body = null;
      why.target = null;
      why.queued = false;
      delete $("why").dataset.target;
      $("why-title").textContent = "Why?";
      $("why-note").textContent = "Draw a digit: the maps show which pixels the answer depends on.";
      for (const id of ["why-saliency", "why-gradcam", "why-gxi"]) {
        const canvas = $(id);
        canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
        canvas.dataset.heat = "0";
      }
    },
  };
})();
