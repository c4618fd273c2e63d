// The drawing page: strokes on a 280x280 canvas become the 28x28 image MNIST was made of, and the server
// classifies it while the person draws. MNIST's recipe (LeCun et al.): the digit's bounding box is scaled into
// a 20x20 box keeping its aspect ratio, with anti-aliased grey levels, then placed in the 28x28 field so that its
// centre of mass sits at the centre.
"use strict";

const pad = document.getElementById("pad");
const padContext = pad.getContext("2d");
const input = document.getElementById("input");
const inputContext = input.getContext("2d");
const digitOutput = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const statusLine = document.getElementById("status");
const bars = document.getElementById("bars");

const Side = 28, Box = 20;
// about 2.5 px of the 28x28 image once a digit fills the 20x20 box, the stroke width of MNIST's digits
const StrokeWidth = 22;

const barFills = [], barValues = [];
for (let d = 0; d < 10; d++) {
  const li = document.createElement("li");
  li.innerHTML = `<span>${d}</span><span class="track"><span class="fill"></span></span><span class="value">-</span>`;
  bars.appendChild(li);
  barFills.push(li.querySelector(".fill"));
  barValues.push(li.querySelector(".value"));
}

function clearPad() {
  padContext.fillStyle = "#000";
  padContext.fillRect(0, 0, pad.width, pad.height);
  inputContext.fillStyle = "#000";
  inputContext.fillRect(0, 0, Side, Side);
  digitOutput.textContent = "-";
  confidence.textContent = "";
  statusLine.textContent = "";
  for (let d = 0; d < 10; d++) { barFills[d].style.width = "0"; barValues[d].textContent = "-"; }
  bars.querySelectorAll("li").forEach(li => li.classList.remove("best"));
  strokes = 0;
}

let drawing = false, last = null, strokes = 0;
padContext.lineCap = "round";
padContext.lineJoin = "round";

function point(event) {
  const r = pad.getBoundingClientRect();
  return { x: (event.clientX - r.left) * pad.width / r.width, y: (event.clientY - r.top) * pad.height / r.height };
}

function segment(from, to) {
  padContext.strokeStyle = "#fff";
  padContext.lineWidth = StrokeWidth;
  padContext.beginPath();
  padContext.moveTo(from.x, from.y);
  padContext.lineTo(to.x, to.y);
  padContext.stroke();
}

pad.addEventListener("pointerdown", e => {
  drawing = true;
  pad.setPointerCapture(e.pointerId);
  last = point(e);
  segment(last, last);
  strokes++;
  schedule();
});
pad.addEventListener("pointermove", e => {
  if (!drawing) return;
  const p = point(e);
  segment(last, p);
  last = p;
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { if (drawing) { drawing = false; schedule(); } });
}
document.getElementById("clear").addEventListener("click", clearPad);

// One request in flight at a time; a newer drawing waits for it and is then sent (never a queue of stale ones).
let inFlight = false, pending = false;
function schedule() {
  if (inFlight) { pending = true; return; }
  pending = false;
  const pixels = toMnist();
  if (pixels === null) return;
  showInput(pixels);
  inFlight = true;
  fetch("v1/predict", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ pixels: Array.from(pixels) }),
  })
    .then(r => r.ok ? r.json() : r.json().then(p => Promise.reject(new Error(p.detail || r.statusText))))
    .then(answer => { showAnswer(answer); statusLine.textContent = ""; })
    .catch(err => { statusLine.textContent = "the server did not answer: " + err.message; })
    .finally(() => { inFlight = false; if (pending) schedule(); });
}

// The pad as 28x28 grey bytes (0..255), MNIST-style; null when nothing is drawn.
function toMnist() {
  const w = pad.width, h = pad.height;
  const rgba = padContext.getImageData(0, 0, w, h).data;
  const grey = new Float32Array(w * h);
  let left = w, right = -1, top = h, bottom = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = rgba[4 * (y * w + x)];
      grey[y * w + x] = v;
      if (v > 0) {
        if (x < left) left = x;
        if (x > right) right = x;
        if (y < top) top = y;
        if (y > bottom) bottom = y;
      }
    }
  }
  if (right < 0) return null;
  const bw = right - left + 1, bh = bottom - top + 1;
  const scale = Box / Math.max(bw, bh);
  const tw = Math.max(1, Math.round(bw * scale)), th = Math.max(1, Math.round(bh * scale));
  const box = areaResample(grey, w, left, top, bw, bh, tw, th);

  // centre of mass of the scaled digit, then the integer shift that puts it at the field's centre
  let mass = 0, mx = 0, my = 0;
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) { const v = box[y * tw + x]; mass += v; mx += v * (x + 0.5); my += v * (y + 0.5); }
  }
  const offsetX = Math.round(Side / 2 - mx / mass), offsetY = Math.round(Side / 2 - my / mass);
  const out = new Uint8Array(Side * Side);
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      const fx = x + offsetX, fy = y + offsetY;
      if (fx >= 0 && fx < Side && fy >= 0 && fy < Side) out[fy * Side + fx] = Math.min(255, Math.round(box[y * tw + x]));
    }
  }
  return out;
}

// Area-weighted downscaling (each target pixel is the mean of the source area it covers, fractions included):
// the anti-aliasing that gives MNIST its grey edges. Separable: rows first, then columns.
function areaResample(src, stride, left, top, bw, bh, tw, th) {
  const rows = new Float32Array(bh * tw);
  const fx = tw / bw, fy = th / bh;
  for (let y = 0; y < bh; y++) {
    for (let x = 0; x < bw; x++) spread(rows, y * tw, src[(top + y) * stride + left + x], x * fx, fx, tw);
  }
  const out = new Float32Array(th * tw);
  const column = new Float32Array(th);
  for (let x = 0; x < tw; x++) {
    column.fill(0);
    for (let y = 0; y < bh; y++) spread(column, 0, rows[y * tw + x], y * fy, fy, th);
    for (let y = 0; y < th; y++) out[y * tw + x] = column[y];
  }
  return out;
}

// Adds value * (overlap of [start, start + width) with each target cell) into target[base + cell].
function spread(target, base, value, start, width, cells) {
  if (value === 0) return;
  const end = start + width;
  for (let cell = Math.floor(start); cell < end && cell < cells; cell++) {
    const overlap = Math.min(end, cell + 1) - Math.max(start, cell);
    if (overlap > 0) target[base + cell] += value * overlap;
  }
}

function showInput(pixels) {
  const image = inputContext.createImageData(Side, Side);
  for (let i = 0; i < Side * Side; i++) {
    image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = pixels[i];
    image.data[4 * i + 3] = 255;
  }
  inputContext.putImageData(image, 0, 0);
}

function showAnswer(answer) {
  if (strokes === 0) return; // cleared while the request was out
  digitOutput.textContent = String(answer.digit);
  confidence.textContent = `(${(100 * answer.probabilities[answer.digit]).toFixed(1)}%)`;
  const items = bars.querySelectorAll("li");
  for (let d = 0; d < 10; d++) {
    const p = answer.probabilities[d];
    barFills[d].style.width = (100 * p).toFixed(1) + "%";
    barValues[d].textContent = p.toFixed(3);
    items[d].classList.toggle("best", d === answer.digit);
  }
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions || 0) + 1);
}

clearPad();
