// Line charts on a <canvas>: one value per epoch per series, with axes and a legend.
"use strict";
const niceStep = (x) => {  // 1, 2 or 5 times a power of ten, at least x
  const power = 10 ** Math.floor(Math.log10(x)), f = x / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
};
function drawChart(canvas, series, { yMax = null, yStep = null, format = (v) => String(+v.toPrecision(3)) } = {}) {
  const ratio = window.devicePixelRatio || 1, width = canvas.clientWidth || 500, height = 240;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 52, right = 16, top = 28, bottom = 34;
  const plotW = width - left - right, plotH = height - top - bottom;
  const values = series.flatMap((s) => s.points).filter((v) => Number.isFinite(v));
  const high = yMax ?? Math.max(1e-6, ...values), step = yStep ?? niceStep(high / 4);
  const lines = Math.max(1, Math.ceil(high / step - 1e-9)), top_ = lines * step;
  const epochs = Math.max(1, ...series.map((s) => s.points.length));
  const x = (i) => left + plotW * (epochs === 1 ? 0.5 : i / (epochs - 1));
  const y = (v) => top + plotH * (1 - v / top_);

  ctx.font = "11px system-ui, sans-serif"; ctx.lineWidth = 1;
  for (let i = 0; i <= lines; i++) {
    const v = step * i;
    ctx.strokeStyle = "#e3e6ea"; ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(left + plotW, y(v)); ctx.stroke();
    ctx.fillStyle = "#6b7280"; ctx.textAlign = "right"; ctx.fillText(format(v), left - 6, y(v) + 4);
  }
  ctx.textAlign = "center";
  const every = Math.max(1, Math.ceil(epochs / 10));
  for (let i = 0; i < epochs; i += every) ctx.fillText(String(i + 1), x(i), top + plotH + 16);
  ctx.fillText("epoch", left + plotW / 2, height - 4);

  let drawn = 0, legendX = left;
  for (const { label, color, dash = [], points } of series) {
    if (!points.length) continue;
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 2; ctx.setLineDash(dash);
    ctx.beginPath();
    points.forEach((v, i) => { if (i === 0) ctx.moveTo(x(i), y(v ?? 0)); else ctx.lineTo(x(i), y(v ?? 0)); });
    ctx.stroke(); ctx.setLineDash([]);
    points.forEach((v, i) => { ctx.beginPath(); ctx.arc(x(i), y(v ?? 0), 2.5, 0, 2 * Math.PI); ctx.fill(); drawn++; });
    ctx.fillRect(legendX, 10, 14, 3); ctx.textAlign = "left"; ctx.fillStyle = "#1d2330";
    ctx.fillText(label, legendX + 18, 15); legendX += 30 + ctx.measureText(label).width;
  }
  canvas.dataset.points = String(drawn);
}

// A scatter of (x, y) points per series (x on a log scale when it spans a decade or more);
// a point with `ringed` gets a ring.
function drawScatter(canvas, series) {
  const ratio = window.devicePixelRatio || 1, width = canvas.clientWidth || 500, height = 240;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 52, right = 16, top = 28, bottom = 34;
  const plotW = width - left - right, plotH = height - top - bottom;
  const points = series.flatMap((s) => s.points);
  if (!points.length) return;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const log = Math.max(...xs) >= 10 * Math.min(...xs);
  const fx = (v) => (log ? Math.log10(v) : v);
  const x0 = fx(Math.min(...xs)), x1 = fx(Math.max(...xs));
  const y0 = Math.min(...ys) - 0.02, y1 = Math.min(1, Math.max(...ys) + 0.02);
  const x = (v) => left + plotW * (x1 === x0 ? 0.5 : (fx(v) - x0) / (x1 - x0));
  const y = (v) => top + plotH * (1 - (v - y0) / Math.max(1e-6, y1 - y0));
  ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#6b7280"; ctx.textAlign = "right";
  for (const v of [y0, (y0 + y1) / 2, y1]) ctx.fillText(`${Math.round(100 * v)}%`, left - 6, y(v) + 4);
  ctx.textAlign = "center";
  ctx.fillText(`parameters${log ? " (log)" : ""}`, left + plotW / 2, height - 4);
  let drawn = 0, legendX = left;
  for (const { label, color, points: own } of series) {
    if (!own.length) continue;
    ctx.fillStyle = color; ctx.strokeStyle = "#1d2330";
    for (const p of own) {
      ctx.beginPath(); ctx.arc(x(p.x), y(p.y), 4, 0, 2 * Math.PI); ctx.fill(); drawn++;
      if (p.ringed) { ctx.beginPath(); ctx.arc(x(p.x), y(p.y), 8, 0, 2 * Math.PI); ctx.stroke(); }
    }
    ctx.fillRect(legendX, 10, 14, 3); ctx.textAlign = "left"; ctx.fillStyle = "#1d2330";
    ctx.fillText(label, legendX + 18, 15); legendX += 30 + ctx.measureText(label).width;
  }
  canvas.dataset.points = String(drawn);
}
