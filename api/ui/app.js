// convlab's dashboard: plain modules, no build step, no network beyond this API. Every
// request carries the token (kept for this browser tab) when the server asks for one.

import { curvesChart, epochCurves, heatMap, runGroups, studyCharts, testCurves } from "./charts.js";

const TOKEN_KEY = "convlab-token";
const ACTIVE = new Set(["queued", "running", "paused"]);
const page = document.getElementById("page");

// ---- talking to the API ----------------------------------------------------------------

class ApiError extends Error {}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function describe(detail) {
  if (Array.isArray(detail)) {
    return detail.map((item) => `${item.loc.join(".")}: ${item.msg}`).join("\n");
  }
  return String(detail);
}

async function request(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) askForToken();
  if (!response.ok) {
    const text = await response.text();
    let detail = text;
    try {
      detail = JSON.parse(text).detail;
    } catch (_) {
      // not JSON: keep the text
    }
    const error = new ApiError(describe(detail));
    error.status = response.status;
    error.detail = detail;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

async function follow(path, onEvent, signal) {
  // Server-sent events through fetch (EventSource cannot send a token); reconnects with
  // Last-Event-ID until the server ends the stream after the final status.
  let lastId = null;
  let finished = false;
  while (!finished && !signal.aborted) {
    const headers = authHeaders();
    if (lastId) headers["Last-Event-ID"] = lastId;
    try {
      const response = await fetch(path, { headers, signal });
      if (!response.ok) return;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event.id) lastId = event.id;
          if (event.data !== undefined) onEvent(event);
        }
      }
      finished = true;
    } catch (error) {
      if (signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function parseEvent(block) {
  const event = {};
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    event[field] = field === "data" ? JSON.parse(value) : value;
  }
  return event;
}

// ---- building the page -----------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      element.append(child instanceof Node ? child : String(child));
    }
  }
  return element;
}

const fixed = (value, digits = 3) => (value === null || value === undefined ? "–" : value.toFixed(digits));
const statusBadge = (status) => h("span", { class: `status status-${status}`, "data-status": status }, status);
const queueNote = (experiment) => {
  // A queued run's place in line and when it should start (GET /experiments' queue fields).
  // waiting_for: workers are up, but none whose accelerator its resources accept.
  if (experiment.waiting_for) return h("span", { class: "queue" }, ` waiting for ${experiment.waiting_for}`);
  if (experiment.queue_position === null || experiment.queue_position === undefined) return "";
  // workers_up 0: no worker has been heard from, so the run waits until one starts.
  const eta = experiment.eta_seconds;
  const when = experiment.workers_up === 0 ? ", but no worker is running: start one with make up"
    : eta === null ? "" : `, starts in ~${eta < 90 ? `${Math.round(eta)} s` : `${Math.round(eta / 60)} min`}`;
  return h("span", { class: "queue", "data-position": experiment.queue_position, "data-workers": experiment.workers_up },
    ` #${experiment.queue_position} in line${when}`);
};
const progressOf = (done, total) =>
  h("span", {}, h("progress", { value: done, max: total }), ` ${done}/${total}`);

const shortId = (id) => id.slice(0, 8);
const experimentLink = (experiment) => h("a", { href: `#/experiments/${experiment.id}` }, experiment.name || shortId(experiment.id));

function coalesce(action, ms) {
  // Calls action once, ms after the first of a burst of calls (a stream replaying its
  // epochs, say); cancel() drops a call still pending.
  let pending = null;
  const schedule = () => {
    pending ??= setTimeout(() => {
      pending = null;
      action();
    }, ms);
  };
  schedule.cancel = () => {
    clearTimeout(pending);
    pending = null;
  };
  return schedule;
}

function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}

function askForToken() {
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token").focus();
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  event.target.hidden = true;
  render();
});

// ---- pages -----------------------------------------------------------------------------

const STATUSES = ["", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const SORTS = [["-created_at", "newest first"], ["created_at", "oldest first"]].concat(
  ["final", "best"].flatMap((section) => ["val_accuracy", "val_loss", "accuracy", "loss"].flatMap((metric) => [
    [`-${section}.${metric}`, `${section} ${metric}, highest first`],
    [`${section}.${metric}`, `${section} ${metric}, lowest first`],
  ])),
);

function filtersOf(params) {
  // The listing's filters from the page's hash: status, tags (all must match), dataset,
  // text in the name or notes, and the order.
  const filters = new URLSearchParams();
  for (const key of ["status", "dataset", "q", "sort"]) if (params.get(key)) filters.set(key, params.get(key));
  for (const tag of params.getAll("tag")) filters.append("tag", tag);
  return filters;
}

function filterBar(params) {
  // Changing a select or submitting the form shows the first page of the new listing.
  const apply = (form) => {
    const chosen = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      if (key === "tag") value.split(",").map((tag) => tag.trim()).filter(Boolean).forEach((tag) => chosen.append("tag", tag));
      else if (value) chosen.set(key, value);
    }
    location.hash = `#/?${chosen}`;
  };
  const submit = (event) => apply(event.target.form);
  const sort = params.get("sort") || "-created_at";
  return h("form", { id: "filters", class: "toolbar", onsubmit: (event) => { event.preventDefault(); apply(event.target); } },
    h("select", { id: "status-filter", name: "status", onchange: submit },
      STATUSES.map((value) => h("option", { value, selected: value === (params.get("status") || "") }, value || "any status"))),
    h("input", { id: "tag-filter", name: "tag", placeholder: "tags, comma-separated", value: params.getAll("tag").join(", ") }),
    h("input", { id: "dataset-filter", name: "dataset", placeholder: "dataset", value: params.get("dataset") || "" }),
    h("input", { id: "text-filter", name: "q", type: "search", placeholder: "name or notes", value: params.get("q") || "" }),
    h("select", { id: "sort", name: "sort", onchange: submit },
      SORTS.map(([value, label]) => h("option", { value, selected: value === sort }, label))),
    h("button", { type: "submit" }, "Filter"));
}

const tagLink = (tag) => h("a", { class: "tag", href: `#/?${new URLSearchParams({ tag })}` }, tag);

function experimentsTable(id, body, ...leading) {
  // The experiments list's table; `leading` header cells go before its usual columns.
  const headings = ["Name", "Tags", "Preset", "Status", "Epochs", "Test accuracy", "Created"];
  return h("table", { id },
    h("thead", {}, h("tr", {}, leading, headings.map((name) => h("th", { class: name === "Test accuracy" ? "number" : null }, name)))),
    body);
}

function experimentRow(experiment, ...leading) {
  return h("tr", { "data-id": experiment.id }, leading,
    h("td", {}, experimentLink(experiment)),
    h("td", { class: "tags" }, experiment.tags.map(tagLink)),
    h("td", {}, experiment.spec.preset),
    h("td", {}, statusBadge(experiment.status), queueNote(experiment)),
    h("td", {}, progressOf(experiment.epochs_done, experiment.epochs_total)),
    h("td", { class: "number" }, fixed(experiment.final?.val_accuracy)),
    h("td", {}, new Date(experiment.created_at).toLocaleString()));
}

function comparePicker() {
  // A checkbox per row, ticks kept while the list refreshes, and the button that compares
  // the ticked experiments (two or more), in the order they were ticked.
  const ticked = new Set();
  const button = h("button", { id: "compare", type: "button", disabled: true, title: "Tick two or more experiments to compare them",
    onclick: () => { location.hash = `#/compare?ids=${[...ticked].join(",")}`; } }, "Compare");
  const tick = (id, on) => {
    if (on) ticked.add(id);
    else ticked.delete(id);
    button.disabled = ticked.size < 2;
  };
  const box = (experiment) => h("td", {}, h("input", {
    type: "checkbox", class: "pick", "aria-label": `Compare ${experiment.name || experiment.id}`,
    checked: ticked.has(experiment.id), onchange: (event) => tick(experiment.id, event.target.checked) }));
  return { button, box };
}

async function experimentsPage(params, signal) {
  const filters = filtersOf(params);
  const query = new URLSearchParams(filters);
  query.set("limit", "25");
  if (params.get("cursor")) query.set("cursor", params.get("cursor"));
  const body = h("tbody");
  const problems = h("div", { id: "list-errors" });
  const next = h("a", { hidden: true }, "Next page");
  const picker = comparePicker();
  page.replaceChildren(
    h("h1", {}, "Experiments"),
    filterBar(params),
    h("div", { class: "toolbar" }, picker.button, params.get("cursor") ? h("a", { href: `#/?${filters}` }, "First page") : null, next),
    problems,
    experimentsTable("experiments", body, h("th", {}, "Pick")),
  );
  let shown = null;
  const refresh = async () => {
    const listing = await request("GET", `/experiments?${query}`);
    const seen = JSON.stringify(listing);
    if (seen === shown) return; // unchanged: the rows (and the boxes being ticked) stay
    shown = seen;
    body.replaceChildren(...listing.items.map((experiment) => experimentRow(experiment, picker.box(experiment))));
    next.hidden = !listing.next_cursor;
    if (listing.next_cursor) next.href = `#/?${filters}&${new URLSearchParams({ cursor: listing.next_cursor })}`;
  };
  try {
    await refresh();
  } catch (error) {
    problems.replaceChildren(errorBox(error)); // a refused filter: the bar stays to fix it
    return;
  }
  const timer = setInterval(() => refresh().catch(() => {}), 3000);
  signal.addEventListener("abort", () => clearInterval(timer));
}

const STATS = [
  ["train_accuracy", "Train accuracy", 3], ["test_accuracy", "Test accuracy", 3],
  ["train_loss", "Train loss", 3], ["test_loss", "Test loss", 3],
  ["best_epoch", "Best epoch", 1], ["best_val_accuracy", "Best val_accuracy", 3],
  ["epochs_run", "Epochs run", 1], ["seconds_per_epoch", "Seconds/epoch", 2],
];

function statsTable(heading, rows, label, baseline) {
  // A study's or a comparison's table: each statistic as mean ± std over the row's runs;
  // label(row, index) fills the first cell; then its test accuracy's difference to the
  // baseline's row, with its 95% interval and p-value ("noise" when the interval holds 0).
  const stat = ({ mean, std }, digits) => (std === null ? fixed(mean, digits) : `${fixed(mean, digits)} ± ${fixed(std, digits)}`);
  return h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, heading), h("th", { class: "number" }, "Runs"),
      STATS.map(([, name]) => h("th", { class: "number" }, name)),
      h("th", { class: "number" }, `Test accuracy vs ${baseline} (95% CI)`), h("th", { class: "number" }, "p"))),
    h("tbody", {}, rows.map((row, index) => h("tr", {},
      h("td", {}, label(row, index)), h("td", { class: "number" }, row.runs),
      STATS.map(([key, , digits]) => h("td", { class: "number", "data-column": key }, stat(row[key], digits))),
      differenceCells(row.difference)))));
}

function differenceCells(difference) {
  // The test accuracy cells of a table row: "baseline" on its own row, "–" below two seeds.
  if (!difference) return [h("td", { class: "number", "data-column": "difference" }, "baseline"), h("td")];
  const { mean, low, high, p_value: p, beyond_noise: beyond } = difference.test_accuracy;
  const sign = (value) => (value >= 0 ? "+" : "") + fixed(value);
  const text = mean === null ? "–" : `${sign(mean)} [${sign(low)}, ${sign(high)}]${beyond ? "" : " noise"}`;
  return [h("td", { class: "number", "data-column": "difference", "data-beyond-noise": String(beyond) }, text),
    h("td", { class: "number", "data-column": "p-value" }, p === null ? "–" : String(Number(p.toPrecision(2))))];
}

function seedsForm(study, problems) {
  // Run every variant again at more seeds; prefilled with the seeds per variant the power
  // estimate asks for to tell the differences still within noise apart (at most 20 seeds).
  const most = 20 - study.seeds.length;
  const needed = study.table.filter((row) => row.difference && !row.difference.test_accuracy.beyond_noise)
    .map((row) => row.difference.test_accuracy.seeds_needed).filter((count) => count !== null);
  const wanted = needed.length ? Math.max(...needed) - study.seeds.length : 3 - study.seeds.length;
  const count = h("input", { id: "add-seeds-count", type: "number", min: 1, max: Math.max(most, 1), value: Math.max(1, Math.min(wanted, most)), "aria-label": "More seeds" });
  return h("form", { id: "seeds-form", class: "inline", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await request("POST", `/studies/${study.id}/seeds`, { add: Number(count.value) });
      problems.replaceChildren();
    } catch (error) {
      problems.replaceChildren(errorBox(error));
    }
  } }, h("button", { type: "submit", id: "add-seeds", disabled: most < 1 }, "Add seeds"), " ", count, " more per variant");
}

const compareLabel = (row) => row.name || `${row.preset} ${shortId(row.experiment_id)}`;

async function comparePage(params) {
  const ids = [...new Set((params.get("ids") || "").split(",").map((id) => id.trim()).filter(Boolean))];
  const query = new URLSearchParams({ ids: ids.join(",") });
  const baseline = params.get("baseline") ? `&${new URLSearchParams({ baseline: params.get("baseline") })}` : "";
  const comparison = await request("GET", `/compare?${query}${baseline}`); // one row per id, in order
  const plot = curves("compare-plot", "Test accuracy and loss of each run, overlaid");
  page.replaceChildren(
    h("h1", {}, `Comparing ${ids.length} experiments`),
    ...plot.elements,
    h("div", { id: "compare-table" }, statsTable("Experiment", comparison.table,
      (row, index) => h("a", { href: `#/experiments/${ids[index]}` }, compareLabel(row)), comparison.baseline)),
  );
  const histories = await Promise.all(comparison.table.map((row) => request("GET", `/experiments/${row.experiment_id}/history`)));
  plot.update(comparison.table.some((row) => row.runs > 0), false,
    histories.flatMap((history, index) => testCurves(compareLabel(comparison.table[index]), [history.epochs])));
}

function labelsEditor(id, experiment, onChange) {
  // The experiment's tags (each removable, new ones added) and notes, saved with PATCH.
  const tags = h("span", { id: "tags" });
  const newTag = h("input", { id: "new-tag", placeholder: "new tag", maxlength: 64 });
  const notes = h("textarea", { id: "notes", rows: 4, maxlength: 10000, placeholder: "Notes" }, experiment.notes || "");
  const saved = h("span", { id: "notes-saved" });
  const problems = h("div", { id: "label-errors" });
  const save = async (changes) => {
    try {
      experiment = await request("PATCH", `/experiments/${id}`, changes);
    } catch (error) {
      problems.replaceChildren(errorBox(error));
      return false;
    }
    problems.replaceChildren();
    showTags();
    onChange(experiment);
    return true;
  };
  const showTags = () => tags.replaceChildren(...experiment.tags.map((tag) => h("span", { class: "tag", "data-tag": tag }, tag,
    h("button", { type: "button", class: "remove-tag", title: `Remove ${tag}`,
      onclick: () => save({ tags: experiment.tags.filter((other) => other !== tag) }) }, "×"))));
  showTags();
  return [
    h("form", { id: "tag-form", class: "toolbar", onsubmit: async (event) => {
      event.preventDefault();
      const tag = newTag.value.trim();
      if (tag && (await save({ tags: [...experiment.tags, tag] }))) newTag.value = "";
    } }, tags, newTag, h("button", { type: "submit" }, "Add tag")),
    h("form", { id: "notes-form", onsubmit: async (event) => {
      event.preventDefault();
      saved.textContent = (await save({ notes: notes.value || null })) ? "Saved." : "";
    } }, notes, h("div", { class: "toolbar" }, h("button", { type: "submit", id: "save-notes" }, "Save notes"), saved)),
    problems,
  ];
}

const fact = (term, value, attributes = {}) => [h("dt", {}, term), h("dd", attributes, value)];
const trained = (experiment) => !ACTIVE.has(experiment.status) && experiment.epochs_done > 0;

function curves(id, alt) {
  // Interactive curves (charts.js), drawn from `series` once an epoch has ended; a sentence
  // instead while none has (and for good when the run ended without one).
  const chart = curvesChart(id, alt);
  const none = h("p", { id: `no-${id}`, class: "muted", hidden: true });
  const update = (drawn, active, series, joins) => {
    none.hidden = drawn;
    none.textContent = active ? "The curves appear when the first epoch ends." : "No epoch finished, so there are no curves to draw.";
    if (drawn) chart.draw(series, joins);
    else chart.hide();
  };
  return { elements: [chart.element, none], update };
}

function rateChart() {
  // Each epoch's learning rate as a small line: a schedule's shape at a glance (hidden while
  // every recorded rate is the same: a constant rate is in the spec and the history table).
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  for (const [key, value] of Object.entries({ id: "learning-rate", viewBox: "0 0 300 80", width: 300, height: 80, role: "img", "aria-label": "Learning rate per epoch" })) {
    svg.setAttribute(key, value);
  }
  const line = document.createElementNS(svgNS, "polyline");
  for (const [key, value] of Object.entries({ fill: "none", stroke: "currentColor", "stroke-width": 2 })) line.setAttribute(key, value);
  const zero = document.createElementNS(svgNS, "line");  // the axis at rate 0
  for (const [key, value] of Object.entries({ x1: 5, y1: 75, x2: 295, y2: 75, stroke: "#bbb" })) zero.setAttribute(key, value);
  svg.append(zero, line);
  const caption = h("p", { class: "muted", id: "learning-rate-range" });
  const panel = h("div", { hidden: true }, h("h2", {}, "Learning rate"), svg, caption);
  const rates = new Map();
  const add = (epoch) => {
    if (epoch.learning_rate === null || epoch.learning_rate === undefined) return;
    rates.set(epoch.epoch, epoch.learning_rate);
    const points = [...rates.entries()].sort(([a], [b]) => a - b);
    const highest = Math.max(...points.map(([, rate]) => rate));
    const step = 290 / Math.max(points.length - 1, 1);
    line.setAttribute("points", points.map(([, rate], i) => `${(5 + i * step).toFixed(1)},${(75 - (70 * rate) / highest).toFixed(1)}`).join(" "));
    const first = points[0], last = points.at(-1);
    caption.textContent = `Epoch ${first[0]}: ${rateText(first[1])}; epoch ${last[0]}: ${rateText(last[1])}; highest ${rateText(highest)}.`;
    panel.hidden = new Set(rates.values()).size < 2;
  };
  return { panel, add };
}

const rateText = (value) => (value === null || value === undefined ? "–" : value.toPrecision(3));

function evaluationPanel(id) {
  // A succeeded run's per-class accuracy on the test set and its confusion matrix; nothing
  // until the server has them (404).
  const panel = h("section", { id: "evaluation", hidden: true });
  let loaded = false;
  const load = async () => {
    if (loaded) return;
    loaded = true;
    let evaluation;
    try {
      evaluation = await request("GET", `/experiments/${id}/evaluation`);
    } catch (_) {
      loaded = false; // not evaluated yet: the next status change looks again
      return;
    }
    panel.replaceChildren(
      h("h2", {}, `Evaluation on the test set (${evaluation.weights} weights)`),
      h("table", { id: "per-class" },
        h("thead", {}, h("tr", {}, h("th", {}, "Class"), h("th", { class: "number" }, "Accuracy"), h("th", { class: "number" }, "Test images"))),
        h("tbody", {}, evaluation.classes.map((name, index) => h("tr", {},
          h("td", {}, name), h("td", { class: "number" }, fixed(evaluation.per_class_accuracy[index])),
          h("td", { class: "number" }, evaluation.confusion[index].reduce((sum, count) => sum + count, 0)))))),
      heatMap("confusion", evaluation.classes, evaluation.confusion),
    );
    panel.hidden = false;
  };
  return { panel, load };
}

function continueForm(id, problems) {
  // Train an ended experiment on from its last checkpoint, as a new experiment.
  const epochs = h("input", { id: "continue-epochs", type: "number", min: 1, max: 1000, value: 10, "aria-label": "More epochs" });
  return h("form", { id: "continue-form", class: "inline", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const child = await request("POST", `/experiments/${id}/continue`, { epochs: Number(epochs.value) });
      location.hash = `#/experiments/${child.id}`;
    } catch (error) {
      problems.replaceChildren(errorBox(error));
    }
  } }, h("button", { type: "submit", id: "continue" }, "Continue"), " for ", epochs, " more epochs");
}

function summaryOf(experiment, parent) {
  // Only a finished run's last epoch is its final result; while it trains, the latest.
  const result = ACTIVE.has(experiment.status) ? "Latest" : "Final";
  return [
    fact("Preset", experiment.spec.preset),
    fact("Dataset", experiment.spec.dataset.name),
    experiment.parent_id
      ? fact(experiment.epoch_offset ? "Continues" : "Rerun of",
        experimentLink(parent ?? { id: experiment.parent_id }), { id: "parent" })
      : [],
    experiment.verifies_id
      ? fact("Verifies", experimentLink({ id: experiment.verifies_id }), { id: "verifies" })
      : [],
    experiment.verdict ? verdictFacts(experiment) : [],
    fact(`${result} test accuracy`, fixed(experiment.final?.val_accuracy), { id: "final-val-accuracy" }),
    fact(`${result} test loss`, fixed(experiment.final?.val_loss)),
    fact("Best epoch", experiment.best ? `${experiment.best.epoch} (${fixed(experiment.best.val_accuracy)})` : "–"),
  ].flat();
}

function verdictFacts(experiment) {
  // How the verification rerun compared with the run it verifies, and with which run.
  const verdict = experiment.verdict;
  const other = experiment.id === verdict.rerun_id ? verdict.original_id : verdict.rerun_id;
  const changed = Object.entries(verdict.environment_differences)
    .map(([key, change]) => `${key}: ${change.original ?? "–"} → ${change.rerun ?? "–"}`);
  return [
    fact("Verdict", verdict.summary, { id: "verdict", "data-outcome": verdict.outcome }),
    fact(experiment.id === verdict.rerun_id ? "Verified run" : "Verified by", experimentLink({ id: other })),
    changed.length ? fact("Environment changes", changed.join("; "), { id: "environment-changes" }) : [],
  ].flat();
}

const environmentText = (env) => !env ? "not recorded" : [
  `Python ${env.python}`, `TensorFlow ${env.tensorflow}`, `Keras ${env.keras}`,
  `CUDA ${env.cuda ?? "–"}`, `cuDNN ${env.cudnn ?? "–"}`,
  env.driver ? `${env.gpu} (driver ${env.driver})` : env.gpu,
  `convlab ${env.convlab ?? "–"}${env.commit ? ` (${env.commit.slice(0, 12)})` : ""}`,
].join(", ");

function attemptRows(experiment) {
  // Each attempt: when, which process, on what, with which software.
  return experiment.attempt_log.map((a) => h("tr", { "data-attempt": a.number },
    [a.number, a.started_at, a.worker, a.accelerator?.name ?? "–", environmentText(a.environment)]
      .map((cell) => h("td", {}, String(cell)))));
}

function controlsFor(id, problems, show) {
  // What can be done to the experiment, each control with the test that says when it is
  // shown; `show` takes the experiment an action answers with.
  const act = (verb) => async () => {
    try {
      show(await request("POST", `/experiments/${id}/${verb}`));
      problems.replaceChildren();
    } catch (error) {
      problems.replaceChildren(errorBox(error));
    }
  };
  return [
    [h("button", { id: "pause", onclick: act("pause") }, "Pause"), (e) => e.status === "queued" || e.status === "running"],
    [h("button", { id: "resume", onclick: act("resume") }, "Resume"), (e) => e.status === "paused"],
    [h("button", { id: "cancel", onclick: act("cancel") }, "Cancel"), (e) => ACTIVE.has(e.status)],
    [h("button", { id: "download", onclick: () => downloadModel(id) }, "Download model"), trained],
    [continueForm(id, problems), trained],
    [h("button", { id: "rerun", onclick: () => { location.hash = `#/submit?from=${id}`; } }, "Rerun with changes"), () => true],
    [h("button", { id: "verify", title: "Rerun the same spec and compare every epoch", onclick: async () => {
      try {
        location.hash = `#/experiments/${(await request("POST", `/experiments/${id}/verify`)).id}`;
      } catch (error) {
        problems.replaceChildren(errorBox(error));
      }
    } }, "Verify"), (e) => e.status === "succeeded" && !e.epoch_offset],
  ];
}

async function experimentPage(id, signal) {
  let experiment = await request("GET", `/experiments/${id}`);
  const parent = experiment.parent_id ? await request("GET", `/experiments/${experiment.parent_id}`).catch(() => null) : null;
  const status = h("span", { id: "status" });
  const failure = h("p", { id: "run-error", class: "error", role: "alert" });
  const problems = h("div", { id: "action-errors" });
  const summary = h("dl", { class: "facts" });
  const rows = h("tbody", { id: "history" });
  const attempts = h("tbody", { id: "attempts" });
  const plot = curves("plot", "Accuracy and loss per epoch");
  const rate = rateChart();
  const evaluation = evaluationPanel(id);
  const epochs = new Map(); // the curves' rows by epoch: the history's, then the stream's
  let joins = [];
  const draw = () => plot.update(experiment.epochs_done > 0 || epochs.size > 0, ACTIVE.has(experiment.status), epochCurves(epochs.values()), joins);
  const show = (changed) => {
    experiment = changed;
    status.replaceChildren(statusBadge(experiment.status), queueNote(experiment), " ", progressOf(experiment.epochs_done, experiment.epochs_total));
    for (const [control, shown] of controls) control.hidden = !shown(experiment);
    failure.hidden = !experiment.error;
    failure.textContent = experiment.error ?? "";
    summary.replaceChildren(...summaryOf(experiment, parent));
    attempts.replaceChildren(...attemptRows(experiment));
    draw();
    if (experiment.status === "succeeded") evaluation.load();
  };
  const controls = controlsFor(id, problems, show);
  page.replaceChildren(
    h("h1", {}, experiment.name || `Experiment ${shortId(id)}`),
    h("div", { class: "toolbar" }, status, controls.map(([control]) => control)),
    problems,
    failure,
    ...plot.elements,
    rate.panel,
    h("h2", {}, "Summary"), summary,
    evaluation.panel,
    h("h2", {}, "Tags and notes"), ...labelsEditor(id, experiment, (changed) => { experiment = changed; }),
    h("h2", {}, "History"),
    h("table", {}, h("thead", {}, h("tr", {},
      ["Epoch", "Loss", "Accuracy", "Test loss", "Test accuracy", "Seconds", "Learning rate"].map((name) => h("th", { class: "number" }, name)))), rows),
    h("h2", {}, "Attempts"),
    h("table", {}, h("thead", {}, h("tr", {},
      ["Attempt", "Started", "Worker", "Accelerator", "Environment"].map((name) => h("th", {}, name)))), attempts),
    h("h2", {}, "Spec"), h("pre", {}, JSON.stringify(experiment.spec, null, 2)),
  );
  show(experiment);
  // a continued run's curves joined to its parents' (a run without a parent: its own)
  const history = await request("GET", `/experiments/${id}/history${experiment.epoch_offset ? "?lineage=true" : ""}`);
  for (const row of history.epochs) epochs.set(row.epoch, row);
  joins = (history.lineage ?? []).slice(1).map((part) => part.first_epoch);
  draw();
  // A burst of events (the history replayed on connecting) costs one read of the experiment.
  const refresh = coalesce(async () => {
    if (signal.aborted) return;
    try {
      show(await request("GET", `/experiments/${id}`));
    } catch (_) {
      // the next event reads it again
    }
  }, 250);
  await follow(`/experiments/${id}/events`, (event) => {
    if (event.event === "epoch") {
      rows.append(historyRow(event.data));
      rate.add(event.data);
      epochs.set(event.data.epoch, event.data);
      draw();
    }
    refresh();
  }, signal);
  // A verification's verdict is recorded just after its run ends (by the sweeper at worst).
  for (let tries = 0; tries < 30 && !signal.aborted && experiment.verifies_id && !experiment.verdict
    && !["failed", "cancelled"].includes(experiment.status); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (!signal.aborted) show(await request("GET", `/experiments/${id}`));
  }
}

function historyRow(e) {
  return h("tr", { "data-epoch": e.epoch }, [e.epoch, fixed(e.loss), fixed(e.accuracy), fixed(e.val_loss), fixed(e.val_accuracy), fixed(e.seconds, 2), rateText(e.learning_rate)]
    .map((cell) => h("td", { class: "number" }, cell)));
}

async function downloadModel(id) {
  const response = await fetch(`/experiments/${id}/model`, { headers: authHeaders() });
  if (!response.ok) return;
  const link = h("a", { href: URL.createObjectURL(await response.blob()), download: `convlab-${id}.keras` });
  link.click();
}

async function studiesPage() {
  const listing = await request("GET", "/studies?limit=100");
  page.replaceChildren(
    h("h1", {}, "Studies"),
    h("table", { id: "studies" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Kind"), h("th", {}, "Status"), h("th", {}, "Epochs"))),
      h("tbody", {}, listing.items.map((study) => h("tr", {},
        h("td", {}, h("a", { href: `#/studies/${study.id}` }, study.name || shortId(study.id))),
        h("td", {}, study.kind),
        h("td", {}, statusBadge(study.status)),
        h("td", {}, progressOf(study.progress.epochs_done, study.progress.epochs_total)))))),
  );
}

const shownValue = (value) => String(typeof value === "number" ? Number(value.toPrecision(3)) : value);

function bestTrial(study) {
  // A search names its best finished trial and the parameters it drew.
  if (study.kind !== "search") return [];
  const trial = study.best_trial;
  if (!trial) return [h("h2", {}, "Best trial"), h("p", {}, "No trial has finished yet.")];
  return [
    h("h2", {}, "Best trial"),
    h("p", {}, `Trial ${trial.number} scored ${fixed(trial.value)}: `,
      h("a", { href: `#/experiments/${trial.experiment_id}` }, "its experiment"), ", with"),
    h("dl", { class: "facts" }, Object.entries(trial.params).flatMap(([key, value]) => fact(key, shownValue(value)))),
  ];
}

async function importanceOf(id) {
  // A search's parameter importances (Optuna's PED-ANOVA, summing to 1), or why there are none yet.
  const heading = h("h2", {}, "Parameter importance");
  let found;
  try {
    found = await request("GET", `/studies/${id}/importance`);
  } catch (error) {
    return [heading, h("p", { class: "muted" }, error.message)];
  }
  return [
    heading,
    h("table", { id: "importances" }, h("tbody", {}, Object.entries(found.importances).map(([key, value]) =>
      h("tr", { "data-param": key }, h("td", {}, key), h("td", { class: "number" }, fixed(value)), h("td", {}, h("progress", { max: 1, value })))))),
    h("p", { class: "muted" }, `How much each parameter mattered to ${found.metric}, over ${found.trials} completed trials.`),
  ];
}

async function studyPage(id, signal, params) {
  const plot = curves("study-plot", "Test accuracy and loss of every variant");
  const table = h("div", { id: "study-table" });
  const best = h("div", { id: "best-trial" });
  const weights = h("div", { id: "importance" });
  let weighed = null; // the completed runs the importances shown were computed from
  const explore = studyCharts("study-charts");
  const runs = h("tbody");
  const picker = comparePicker();
  const heading = h("h1");
  const status = h("div", { class: "toolbar" });
  const seeds = h("div", { class: "toolbar" });
  const problems = h("div", { id: "seeds-errors" });
  page.replaceChildren(heading, status, ...plot.elements, best, weights, explore.element, h("h2", {}, "Comparison"), table, seeds, problems,
    h("h2", {}, "Experiments"), h("div", { class: "toolbar" }, picker.button),
    experimentsTable("study-experiments", runs, h("th", {}, "Pick")));
  let shown = null;
  let seedsShown = null;
  const refresh = async () => {
    const baseline = params.get("baseline") ? `?${new URLSearchParams({ baseline: params.get("baseline") })}` : "";
    const [study, listing, data, compared] = await Promise.all([
      request("GET", `/studies/${id}`),
      request("GET", `/experiments?study_id=${id}&sort=created_at&limit=500`),
      request("GET", `/studies/${id}/runs`),
      request("GET", `/studies/${id}/table${baseline}`), // compared with ?baseline= (default: the first)
    ]);
    const seen = JSON.stringify([study, listing, data, compared]);
    if (seen === shown) return; // unchanged: the tables (and the boxes being ticked) stay
    shown = seen;
    heading.textContent = study.name || `Study ${shortId(id)}`;
    status.replaceChildren(statusBadge(study.status), " ", progressOf(study.progress.epochs_done, study.progress.epochs_total));
    best.replaceChildren(...bestTrial(study));
    if (study.kind === "search" && study.progress.succeeded !== weighed) {
      weighed = study.progress.succeeded;
      weights.replaceChildren(...await importanceOf(id));
    }
    table.replaceChildren(statsTable("Variant", compared.table, (row) => h("a", {
      href: `#/studies/${id}?${new URLSearchParams({ baseline: row.variant })}`, title: "Compare the other variants with this one" }, row.variant), compared.baseline));
    const asked = JSON.stringify([study.status, study.seeds]); // rebuilt only then: typing stays
    if (study.kind !== "search" && asked !== seedsShown) seeds.replaceChildren(seedsForm({ ...study, table: compared.table }, problems));
    seedsShown = asked;
    runs.replaceChildren(...listing.items.map((experiment) => experimentRow(experiment, picker.box(experiment))));
    const groups = runGroups(data.runs).map(([label, members]) => testCurves(label, members.map((run) => run.epochs)));
    plot.update(study.progress.epochs_done > 0, ACTIVE.has(study.status), groups.flat());
    explore.show(data);
  };
  await refresh();
  const later = coalesce(() => refresh().catch(() => {}), 700);
  await follow(`/studies/${id}/events`, later, signal);
  later.cancel();
  if (!signal.aborted) await refresh();
}

function fieldsFor(spec, choices, path = []) {
  // One input per leaf of the preset's spec; its data-path is the dotted key it sets, and
  // a key with known choices (dataset.name) is a select.
  return Object.entries(spec).flatMap(([key, value]) => {
    const here = [...path, key];
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      return [h("fieldset", {}, h("legend", {}, here.join(".")), fieldsFor(value, choices, here))];
    }
    const dataPath = here.join(".");
    let input;
    if (choices[dataPath]) {
      input = h("select", {}, choices[dataPath].map(([option, label]) => h("option", { value: option, selected: option === value }, label)));
    } else if (typeof value === "boolean") input = h("input", { type: "checkbox", checked: value });
    else if (typeof value === "number") input = h("input", { type: "number", step: "any", value });
    else if (Array.isArray(value)) input = h("input", { value: value.join(", "), placeholder: "comma-separated numbers" });
    else input = h("input", { value: value ?? "", placeholder: value === null ? "empty: none" : "" });
    input.dataset.path = dataPath;
    input.dataset.kind = value === null ? "null" : Array.isArray(value) ? "list" : typeof value;
    input.name = dataPath;
    return [h("label", {}, h("span", {}, key), input)];
  });
}

function readField(input) {
  const kind = input.dataset.kind;
  if (kind === "boolean") return input.checked;
  if (kind === "number") return input.value === "" ? null : Number(input.value);
  if (kind === "list") return input.value.split(",").map((part) => part.trim()).filter(Boolean).map(Number);
  if (kind === "null") {
    if (input.value.trim() === "") return null;
    try {
      return JSON.parse(input.value);
    } catch (_) {
      return input.value;
    }
  }
  return input.value;
}

function setPath(target, dotted, value) {
  // Plain nested assignment: the changed fields make the same body in any order (the server
  // applies it once, keeping every value given for an optimizer the body switches to), and a
  // field set twice, or inside a field set to a value, is refused rather than overwritten.
  const keys = dotted.split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) {
    node = node[key] ??= {};
    if (typeof node !== "object" || node === null || Array.isArray(node)) throw new Error(`${dotted} is inside a field set to a value`);
  }
  if (Object.hasOwn(node, keys.at(-1))) throw new Error(`${dotted} is set twice`);
  node[keys.at(-1)] = value;
}

// Epochs and batch size that suit a dataset: a small one (under 10,000 training images, as
// digits' 1,437) in batches of 64 for 20 epochs, seconds on a CPU; a larger one as the preset
// says (the chapter's 50 epochs in batches of 1024, for CIFAR-10).
const SMALL_DATASET = 10000;
const SMALL_TRAINING = { epochs: 20, batch_size: 64 };

const availableNames = (datasets) => datasets.filter((dataset) => dataset.available).map((dataset) => dataset.name);

function experimentForm(presets, datasets, parent) {
  // A preset's spec (rerunning: the parent's resolved spec) as one input per field; the
  // body holds only the fields changed, which the server merges over the preset or parent.
  const available = availableNames(datasets);
  const choices = {
    "dataset.name": datasets.map((d) => [d.name, `${d.name}${d.available ? "" : " (not on this server)"}`]),
  };
  const chooser = h("select", { id: "preset" }, presets.map((preset) => h("option", { value: preset.name }, `${preset.name}: ${preset.description}`)));
  const fields = h("div", { id: "fields" });
  const original = new Map();
  const sizes = new Map(datasets.map((d) => [d.name, d.train_size]));
  let shown = null; // the spec in the fields: its training for a dataset that is not small
  const suitDataset = () => {
    // The chosen dataset's epochs and batch size (SMALL_TRAINING, or the spec's own).
    const size = sizes.get(fields.querySelector('[data-path="dataset.name"]').value);
    const training = size !== null && size !== undefined && size < SMALL_DATASET ? SMALL_TRAINING : shown.training;
    for (const key of ["epochs", "batch_size"]) {
      const input = fields.querySelector(`[data-path="training.${key}"]`);
      if (input && training[key] !== undefined) input.value = training[key];
    }
  };
  const show = ({ preset, ...spec }) => {
    shown = spec;
    fields.replaceChildren(...fieldsFor(spec, choices));
    original.clear();
    for (const input of fields.querySelectorAll("[data-path]")) original.set(input.dataset.path, JSON.stringify(readField(input)));
    fields.querySelector('[data-path="dataset.name"]').addEventListener("change", suitDataset);
  };
  const showPreset = () => {
    show(presets.find((preset) => preset.name === chooser.value).spec);
    const dataset = fields.querySelector('[data-path="dataset.name"]');
    if (!available.includes(dataset.value) && available.length) {
      dataset.value = available[0]; // one that runs here
      suitDataset();
    }
  };
  chooser.addEventListener("change", showPreset);
  if (parent) show(parent.spec);
  else showPreset();
  const body = () => {
    const body = parent ? { from: parent.id } : { preset: chooser.value };
    for (const input of fields.querySelectorAll("[data-path]")) {
      input.classList.remove("invalid");
      const value = readField(input);
      if (JSON.stringify(value) !== original.get(input.dataset.path)) setPath(body, input.dataset.path, value);
    }
    return body;
  };
  const mark = (detail) => {
    for (const item of Array.isArray(detail) ? detail : []) {
      fields.querySelector(`[data-path="${CSS.escape(item.loc.slice(1).join("."))}"]`)?.classList.add("invalid");
    }
  };
  const element = h("div", {},
    parent
      ? h("p", { id: "rerun-of" }, "Rerun of ", experimentLink(parent), ": its spec, with the changes made below.")
      : h("div", { class: "toolbar" }, h("label", {}, "Preset ", chooser)),
    fields);
  return { element, body, mark, path: "/experiments", page: "experiments" };
}

const STUDY_KINDS = {
  template: "the chapter's thirteen presets",
  presets: "a list of presets",
  variants: "named sets of changes",
  grid: "every combination of the values given",
  search: "an Optuna search over ranges, trials as experiments",
};

function studyExample(kind, dataset) {
  // A small study of each kind that this server accepts and runs quickly.
  const kinds = {
    template: { template: "chapter" },
    presets: { presets: ["base", "dropout"] },
    variants: { variants: [
      { name: "adam 0.001", optimizer: { name: "adam", learning_rate: 0.001 } },
      { name: "sgd 0.05", optimizer: { name: "sgd", learning_rate: 0.05 } },
    ] },
    grid: { grid: { "optimizer.name": ["sgd", "adam"], "model.batch_norm": [false, true] } },
    search: { search: {
      space: {
        "optimizer.learning_rate": { type: "float", low: 0.0001, high: 0.05, log: true },
        "model.dropout": { type: "float", low: 0.0, high: 0.5 },
      },
      n_trials: 6,
      metric: "val_accuracy",
    } },
  };
  return { ...kinds[kind], dataset: { name: dataset, train_size: 500 }, training: { epochs: 3, batch_size: 64 }, seeds: [0] };
}

function studyForm(datasets) {
  // A study's body as JSON, started from an example of the chosen kind.
  const dataset = availableNames(datasets)[0] ?? "digits";
  const editor = h("textarea", { id: "study-json", rows: 18, spellcheck: false, "aria-label": "The study as JSON" });
  const hint = h("p", { id: "kind-hint", class: "muted" });
  const show = (kind) => {
    editor.value = JSON.stringify(studyExample(kind, dataset), null, 2);
    hint.textContent = `A ${kind} study: ${STUDY_KINDS[kind]}. Edit the JSON: the API's /docs describes every key.`;
  };
  const body = () => {
    editor.classList.remove("invalid");
    try {
      return JSON.parse(editor.value);
    } catch (error) {
      editor.classList.add("invalid");
      throw new Error(`The study's JSON does not parse: ${error.message}`);
    }
  };
  const mark = (detail) => {
    if (Array.isArray(detail)) editor.classList.add("invalid"); // a 422's entries name the keys
  };
  return { element: h("div", {}, hint, editor), show, body, mark, path: "/studies", page: "studies" };
}

async function submitPage(params) {
  const from = params.get("from");
  const [presets, datasets, parent] = await Promise.all([
    request("GET", "/presets"), request("GET", "/datasets"), from ? request("GET", `/experiments/${from}`) : null,
  ]);
  const experiment = experimentForm(presets, datasets, parent);
  const study = studyForm(datasets);
  const kind = h("select", { id: "kind" }, h("option", { value: "experiment" }, "an experiment"),
    Object.keys(STUDY_KINDS).map((name) => h("option", { value: name }, `a study: ${name}`)));
  const part = () => (kind.value === "experiment" ? experiment : study);
  const body = h("div", {}, experiment.element);
  kind.addEventListener("change", () => {
    if (kind.value !== "experiment") study.show(kind.value);
    body.replaceChildren(part().element);
  });
  const name = h("input", { id: "name", placeholder: "optional" });
  const errors = h("div", { id: "errors" });
  const form = h("form", { id: "submit-form", onsubmit: async (event) => {
    event.preventDefault();
    const chosen = part();
    try {
      const sent = chosen.body();
      if (name.value.trim()) sent.name = name.value.trim();
      const created = await request("POST", chosen.path, sent);
      location.hash = `#/${chosen.page}/${created.id}`;
    } catch (error) {
      errors.replaceChildren(errorBox(error));
      chosen.mark(error.detail);
    }
  } },
    h("div", { class: "toolbar" }, parent ? null : h("label", {}, "Submit ", kind), h("label", {}, "Name ", name)),
    body, errors, h("button", { type: "submit", id: "submit" }, "Submit"));
  page.replaceChildren(h("h1", {}, parent ? "Rerun with changes" : "Submit an experiment or a study"), form);
}

// ---- routing ---------------------------------------------------------------------------

let current = new AbortController();

async function render() {
  current.abort();
  current = new AbortController();
  const { signal } = current;
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "experiments" && parts[1]) await experimentPage(parts[1], signal);
    else if (parts[0] === "studies" && parts[1]) await studyPage(parts[1], signal, params);
    else if (parts[0] === "studies") await studiesPage();
    else if (parts[0] === "compare") await comparePage(params);
    else if (parts[0] === "submit") await submitPage(params);
    else await experimentsPage(params, signal);
  } catch (error) {
    if (!signal.aborted) page.replaceChildren(errorBox(error));
  }
}

window.addEventListener("hashchange", render);
render();
