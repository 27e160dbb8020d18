// convlab's dashboard: plain modules, no build step, no network beyond this API. Every
// request carries the token (kept for this browser tab) when the server asks for one.

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

async function showImage(img, path) {
  // Fetched rather than linked: an <img src> cannot carry the token. The browser's cache
  // revalidates with the server's ETag, so an unchanged plot costs a 304.
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) return;
  const url = URL.createObjectURL(await response.blob());
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = url;
  img.src = url;
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
const progressOf = (done, total) =>
  h("span", {}, h("progress", { value: done, max: total }), ` ${done}/${total}`);

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

async function experimentsPage(params, signal) {
  const filters = filtersOf(params);
  const query = new URLSearchParams(filters);
  query.set("limit", "25");
  if (params.get("cursor")) query.set("cursor", params.get("cursor"));
  const body = h("tbody");
  const problems = h("div", { id: "list-errors" });
  const next = h("a", { hidden: true }, "Next page");
  page.replaceChildren(
    h("h1", {}, "Experiments"),
    filterBar(params),
    h("div", { class: "toolbar" }, params.get("cursor") ? h("a", { href: `#/?${filters}` }, "First page") : null, next),
    problems,
    h("table", { id: "experiments" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Name"), h("th", {}, "Tags"), h("th", {}, "Preset"), h("th", {}, "Status"), h("th", {}, "Epochs"),
        h("th", { class: "number" }, "Test accuracy"), h("th", {}, "Created"))),
      body),
  );
  const refresh = async () => {
    const listing = await request("GET", `/experiments?${query}`);
    body.replaceChildren(...listing.items.map((experiment) => h("tr", { "data-id": experiment.id },
      h("td", {}, h("a", { href: `#/experiments/${experiment.id}` }, experiment.name || experiment.id.slice(0, 8))),
      h("td", { class: "tags" }, experiment.tags.map(tagLink)),
      h("td", {}, experiment.spec.preset),
      h("td", {}, statusBadge(experiment.status)),
      h("td", {}, progressOf(experiment.epochs_done, experiment.epochs_total)),
      h("td", { class: "number" }, fixed(experiment.final?.val_accuracy)),
      h("td", {}, new Date(experiment.created_at).toLocaleString()))));
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

async function experimentPage(id, signal) {
  let experiment = await request("GET", `/experiments/${id}`);
  const title = h("h1", {}, experiment.name || `Experiment ${id.slice(0, 8)}`);
  const status = h("span", { id: "status" });
  const cancel = h("button", { id: "cancel", onclick: async () => {
    try {
      experiment = await request("POST", `/experiments/${id}/cancel`);
      facts();
    } catch (error) {
      page.append(errorBox(error));
    }
  } }, "Cancel");
  const download = h("button", { id: "download", onclick: () => downloadModel(id) }, "Download model");
  const plot = h("img", { class: "plot", id: "plot", alt: "Accuracy and loss per epoch" });
  const summary = h("dl", { class: "facts" });
  const rows = h("tbody", { id: "history" });
  const facts = () => {
    status.replaceChildren(statusBadge(experiment.status), " ", progressOf(experiment.epochs_done, experiment.epochs_total));
    cancel.hidden = !ACTIVE.has(experiment.status);
    download.hidden = ACTIVE.has(experiment.status) || experiment.epochs_done === 0;
    summary.replaceChildren(...[
      h("dt", {}, "Preset"), h("dd", {}, experiment.spec.preset),
      h("dt", {}, "Dataset"), h("dd", {}, experiment.spec.dataset.name),
      h("dt", {}, "Final test accuracy"), h("dd", { id: "final-val-accuracy" }, fixed(experiment.final?.val_accuracy)),
      h("dt", {}, "Final test loss"), h("dd", {}, fixed(experiment.final?.val_loss)),
      h("dt", {}, "Best epoch"), h("dd", {}, experiment.best ? `${experiment.best.epoch} (${fixed(experiment.best.val_accuracy)})` : "–"),
      experiment.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, experiment.error)] : [],
    ].flat());
  };
  page.replaceChildren(
    title,
    h("div", { class: "toolbar" }, status, cancel, download),
    plot,
    h("h2", {}, "Summary"), summary,
    h("h2", {}, "Tags and notes"), ...labelsEditor(id, experiment, (changed) => { experiment = changed; }),
    h("h2", {}, "History"),
    h("table", {}, h("thead", {}, h("tr", {},
      ["Epoch", "Loss", "Accuracy", "Test loss", "Test accuracy", "Seconds"].map((name) => h("th", { class: "number" }, name)))), rows),
    h("h2", {}, "Spec"), h("pre", {}, JSON.stringify(experiment.spec, null, 2)),
  );
  facts();
  showImage(plot, `/experiments/${id}/plot.svg`);
  await follow(`/experiments/${id}/events`, async (event) => {
    if (event.event === "epoch") {
      const e = event.data;
      rows.append(h("tr", { "data-epoch": e.epoch }, [e.epoch, fixed(e.loss), fixed(e.accuracy), fixed(e.val_loss), fixed(e.val_accuracy), fixed(e.seconds, 2)]
        .map((cell) => h("td", { class: "number" }, cell))));
      showImage(plot, `/experiments/${id}/plot.svg`);
    }
    experiment = await request("GET", `/experiments/${id}`);
    facts();
  }, signal);
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
        h("td", {}, h("a", { href: `#/studies/${study.id}` }, study.name || study.id.slice(0, 8))),
        h("td", {}, study.kind),
        h("td", {}, statusBadge(study.status)),
        h("td", {}, progressOf(study.progress.epochs_done, study.progress.epochs_total)))))),
  );
}

async function studyPage(id, signal) {
  const plot = h("img", { class: "plot", id: "study-plot", alt: "Test accuracy and loss of every variant" });
  const table = h("div", { id: "study-table" });
  const heading = h("h1");
  const status = h("div", { class: "toolbar" });
  page.replaceChildren(heading, status, plot, h("h2", {}, "Comparison"), table);
  const refresh = async () => {
    const study = await request("GET", `/studies/${id}`);
    heading.textContent = study.name || `Study ${id.slice(0, 8)}`;
    status.replaceChildren(statusBadge(study.status), " ", progressOf(study.progress.epochs_done, study.progress.epochs_total));
    const stat = (value, digits = 3) => (value.std === null ? fixed(value.mean, digits) : `${fixed(value.mean, digits)} ± ${fixed(value.std, digits)}`);
    table.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["Variant", "Runs", "Train accuracy", "Test accuracy", "Train loss", "Test loss", "Best epoch", "Seconds/epoch"]
        .map((name) => h("th", {}, name)))),
      h("tbody", {}, study.table.map((row) => h("tr", {},
        h("td", {}, row.variant), h("td", { class: "number" }, row.runs),
        h("td", { class: "number" }, stat(row.train_accuracy)), h("td", { class: "number" }, stat(row.test_accuracy)),
        h("td", { class: "number" }, stat(row.train_loss)), h("td", { class: "number" }, stat(row.test_loss)),
        h("td", { class: "number" }, stat(row.best_epoch, 1)), h("td", { class: "number" }, stat(row.seconds_per_epoch, 2)))))));
    showImage(plot, `/studies/${id}/plot.svg`);
  };
  await refresh();
  let pending = null;
  await follow(`/studies/${id}/events`, () => {
    pending ??= setTimeout(() => {
      pending = null;
      refresh().catch(() => {});
    }, 700);
  }, signal);
  clearTimeout(pending);
  await refresh();
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
  const keys = dotted.split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  node[keys.at(-1)] = value;
}

async function submitPage() {
  const [presets, datasets] = await Promise.all([request("GET", "/presets"), request("GET", "/datasets")]);
  const choices = {
    "dataset.name": datasets.map((d) => [d.name, `${d.name}${d.available ? "" : " (not on this server)"}`]),
  };
  const chooser = h("select", { id: "preset" }, presets.map((preset) => h("option", { value: preset.name }, `${preset.name}: ${preset.description}`)));
  const name = h("input", { id: "name", placeholder: "optional" });
  const fields = h("div", { id: "fields" });
  const errors = h("div", { id: "errors" });
  const original = new Map();
  const showPreset = () => {
    const spec = { ...presets.find((preset) => preset.name === chooser.value).spec };
    delete spec.preset;
    fields.replaceChildren(...fieldsFor(spec, choices));
    original.clear();
    for (const input of fields.querySelectorAll("[data-path]")) original.set(input.dataset.path, JSON.stringify(readField(input)));
  };
  chooser.addEventListener("change", showPreset);
  const form = h("form", { id: "submit-form", onsubmit: async (event) => {
    event.preventDefault();
    const body = { preset: chooser.value };
    if (name.value.trim()) body.name = name.value.trim();
    for (const input of fields.querySelectorAll("[data-path]")) {
      input.classList.remove("invalid");
      const value = readField(input);
      if (JSON.stringify(value) !== original.get(input.dataset.path)) setPath(body, input.dataset.path, value);
    }
    try {
      const created = await request("POST", "/experiments", body);
      location.hash = `#/experiments/${created.id}`;
    } catch (error) {
      errors.replaceChildren(errorBox(error));
      for (const item of Array.isArray(error.detail) ? error.detail : []) {
        const field = fields.querySelector(`[data-path="${item.loc.slice(1).join(".")}"]`);
        field?.classList.add("invalid");
      }
    }
  } },
    h("div", { class: "toolbar" }, h("label", {}, "Preset ", chooser), h("label", {}, "Name ", name)),
    fields, errors, h("button", { type: "submit", id: "submit" }, "Submit"));
  page.replaceChildren(h("h1", {}, "Submit an experiment"), form);
  showPreset();
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
    else if (parts[0] === "studies" && parts[1]) await studyPage(parts[1], signal);
    else if (parts[0] === "studies") await studiesPage();
    else if (parts[0] === "submit") await submitPage();
    else await experimentsPage(params, signal);
  } catch (error) {
    if (!signal.aborted) page.replaceChildren(errorBox(error));
  }
}

window.addEventListener("hashchange", render);
render();
