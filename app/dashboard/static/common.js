// Shared helpers: the REST API, and building DOM without innerHTML (server text is untrusted).
"use strict";
const KEY_STORAGE = "distillery.apiKey";
const apiKey = () => localStorage.getItem(KEY_STORAGE) || "";
const authHeaders = () => (apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {});
const api = async (path, options = {}) => {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
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
const jobUrl = (id) => `/dashboard/job?id=${encodeURIComponent(id)}`;

// A plain link downloads without a key; with a key the bytes are fetched with the header.
const downloadLink = (jobId, artifact) => {
  const href = `/v1/jobs/${encodeURIComponent(jobId)}/artifacts/${encodeURIComponent(artifact.name)}`;
  const link = el("a", { class: "download button", href, download: artifact.name },
    `⬇ ${artifact.name}`, el("span", { class: "muted" }, ` ${artifact.bytes.toLocaleString()} bytes`));
  link.addEventListener("click", async (event) => {
    if (!apiKey()) return;
    event.preventDefault();
    const response = await fetch(href, { headers: authHeaders() });
    if (!response.ok) { alert(`${artifact.name}: ${response.status} ${response.statusText}`); return; }
    const url = URL.createObjectURL(await response.blob());
    const temporary = el("a", { href: url, download: artifact.name });
    document.body.append(temporary); temporary.click(); temporary.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
  return link;
};

// The API key field in every page's header: only needed where the API requires keys.
document.addEventListener("DOMContentLoaded", () => {
  const input = el("input", { id: "api-key", type: "password", placeholder: "API key (if required)",
    autocomplete: "off", title: "Sent as Authorization: Bearer <key>; kept in this browser only" });
  input.value = apiKey();
  input.addEventListener("change", () => {
    if (input.value.trim()) localStorage.setItem(KEY_STORAGE, input.value.trim());
    else localStorage.removeItem(KEY_STORAGE);
  });
  document.querySelector("header")?.append(el("span", { class: "spacer" }), input);
});
