// The dashboard's script. The server draws every page; this keeps its live parts current by
// polling the JSON API once a second, follows a running job's output, and sends the actions
// (forms marked data-post) with fetch. Data reaches the page only through textContent and
// attributes, never as HTML.
"use strict";

const KEY = "__key__"; // where a <template> row takes its key (links, forms' actions)
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/;
const FINAL = ["completed", "dead", "cancelled"];
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// A value as a cell shows it: the same rules as pages.cell on the server.
function show(value) {
  if (value === null || value === undefined || (Array.isArray(value) && !value.length)) return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.join(", ");
  const text = String(value);
  return ISO.test(text) ? text.slice(0, 19).replace("T", " ") : text;
}

const pick = (item, path) => path.split(".").reduce((value, key) => (value == null ? value : value[key]), item);

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

async function reason(response) {
  try {
    return (await response.json()).error || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (response.status === 401) location.assign("/login");
  if (!response.ok) throw new Error(await reason(response));
  return response.json();
}

function alertText(text) {
  const box = document.querySelector("[role=alert]");
  box.textContent = text;
  box.hidden = !text;
}

// --- tables: rows kept in step with a list from the API, matched by key ---------------------

function fill(root, item) {
  for (const element of root.querySelectorAll("[data-field]")) {
    const text = show(pick(item, element.dataset.field));
    setText(element, text);
    if (element.hasAttribute("title")) element.title = text;
    if (element.hasAttribute("data-state")) element.dataset.state = text;
  }
  for (const element of root.querySelectorAll("[data-show-if]")) element.hidden = !pick(item, element.dataset.showIf);
  for (const element of root.querySelectorAll("[data-hide-if]")) element.hidden = Boolean(pick(item, element.dataset.hideIf));
}

function newRow(table, key) {
  const row = table.querySelector("template").content.firstElementChild.cloneNode(true);
  row.setAttribute(table.dataset.keyAttr, key);
  for (const element of row.querySelectorAll("[href], [action]")) {
    for (const name of ["href", "action"]) {
      const value = element.getAttribute(name);
      if (value && value.includes(KEY)) element.setAttribute(name, value.replace(KEY, encodeURIComponent(key)));
    }
  }
  return row;
}

function sync(table, items) {
  const body = table.tBodies[0];
  const old = new Map(Array.from(body.rows, (row) => [row.getAttribute(table.dataset.keyAttr), row]));
  const rows = items.map((item) => {
    const key = String(pick(item, table.dataset.key));
    const row = old.get(key) || newRow(table, key);
    fill(row, item);
    return row;
  });
  // Rows already in place stay put: moving a row would take the focus from its inputs.
  if (rows.length !== body.rows.length || rows.some((row, index) => body.rows[index] !== row)) {
    body.replaceChildren(...rows);
  }
  const empty = table.nextElementSibling;
  if (empty && empty.classList.contains("empty")) empty.hidden = rows.length > 0;
}

function showOlder(cursor) {
  const link = document.querySelector("a[data-older]");
  if (!link) return;
  link.hidden = !cursor;
  if (cursor) {
    const params = new URLSearchParams(link.dataset.query);
    params.set("cursor", cursor);
    link.href = `${location.pathname}?${params}`;
  }
}

// --- the overview and the job page -----------------------------------------------------------

function showStatus(status) {
  for (const element of document.querySelectorAll("[data-state-count]")) {
    setText(element, String(status.jobs[element.dataset.stateCount] ?? 0));
  }
  for (const element of document.querySelectorAll("[data-workers]")) setText(element, String(status.workers));
  for (const element of document.querySelectorAll("[data-next-run]")) setText(element, show(status.next_run_at));
}

// The latest attempt's kept output, as live.kept_text writes it on the server.
function keptText(job) {
  if (job.stdout && job.stderr) return `${job.stdout}${job.stdout.endsWith("\n") ? "" : "\n"}--- stderr ---\n${job.stderr}`;
  return job.stdout || job.stderr || "";
}

function showJob(job) {
  for (const element of document.querySelectorAll("[data-job-field]")) {
    setText(element, show(job[element.dataset.jobField]));
  }
  const state = document.querySelector("[data-job-state]");
  setText(state, job.state);
  state.dataset.state = job.state;
  for (const form of document.querySelectorAll("[data-when-state]")) {
    form.hidden = !form.dataset.whenState.split(" ").includes(job.state);
  }
  sync(document.getElementById("history"), job.history.map((entry, index) => ({ ...entry, n: index + 1 })));
  const output = document.getElementById("output");
  if (output.dataset.running !== "yes") setText(output, keptText(job));
}

// While an attempt runs, its output arrives as chunks; once it ends, showJob shows what was kept.
async function follow(output, jobId) {
  let after = Number(output.dataset.after);
  for (;;) {
    let state = null;
    try {
      const data = await getJSON(`/api/jobs/${encodeURIComponent(jobId)}/output?after=${after}`);
      if (data.running && output.dataset.running !== "yes") output.textContent = ""; // a new attempt
      for (const chunk of data.chunks) output.append(chunk.text);
      after = data.after;
      output.dataset.running = data.running ? "yes" : "no";
      state = data.state;
    } catch (error) {
      console.warn("queuectl: output:", error.message);
    }
    await sleep(FINAL.includes(state) ? 2000 : 500);
  }
}

// --- every second ------------------------------------------------------------------------------

async function refresh() {
  const reads = new Map(); // one request per URL, however many parts of the page show it
  const read = (url) => {
    if (!reads.has(url)) reads.set(url, getJSON(url));
    return reads.get(url);
  };
  const tasks = [];
  if (document.querySelector("[data-state-count], [data-workers], [data-next-run]")) {
    tasks.push(read("/api/status").then(showStatus));
  }
  for (const table of document.querySelectorAll("table[data-source]")) {
    tasks.push(
      read(table.dataset.source).then((data) => {
        sync(table, table.dataset.list ? data[table.dataset.list] : data);
        if (data && "next_cursor" in data) showOlder(data.next_cursor);
      }),
    );
  }
  const job = document.querySelector("[data-job]");
  if (job) tasks.push(read(`/api/jobs/${encodeURIComponent(job.dataset.job)}`).then(showJob));
  const chart = document.getElementById("chart");
  if (chart && new Date().getSeconds() % 10 === 0) chart.src = `/chart.svg?at=${Date.now()}`;
  await Promise.all(tasks);
}

async function poll() {
  for (;;) {
    try {
      await refresh();
      document.body.classList.remove("stale");
    } catch (error) {
      document.body.classList.add("stale"); // shown dimmed until the next read works
      console.warn("queuectl: refresh:", error.message);
    }
    await sleep(1000);
  }
}

// --- actions -----------------------------------------------------------------------------------

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.hasAttribute("data-post")) return;
  event.preventDefault();
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      headers: { Accept: "application/json" },
      body: new URLSearchParams(new FormData(form)),
    });
    if (!response.ok) throw new Error(await reason(response));
    alertText("");
    form.reset();
    await refresh();
  } catch (error) {
    alertText(error.message);
  } finally {
    button.disabled = false;
  }
});

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "login" || document.body.dataset.page === "error") return;
  poll();
  const output = document.getElementById("output");
  const job = document.querySelector("[data-job]");
  if (output && job) follow(output, job.dataset.job);
});
