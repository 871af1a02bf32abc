// Shared helpers: the REST API, and building DOM without innerHTML (server text is untrusted).
"use strict";
const api = async (path, options = {}) => {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.detail || `${response.status} ${response.statusText}`);
  return body;
};
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
};
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);
const statusBadge = (status) => el("span", { class: `status ${status}` }, status);
