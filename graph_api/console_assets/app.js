// The Recserve tenant console: every page is built on the public GraphQL API at ../graphql.
// Nothing from the API is ever written as HTML: text goes in through textContent only.

const GRAPHQL = new URL("../graphql", location.href);
const TOKEN_KEY = "recserve.console.token";
const main = document.getElementById("main");
const timings = (window.consoleTimings = {});

class ApiError extends Error {
  constructor(message, code, field) {
    super(message);
    this.code = code;
    this.field = field;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function gql(query, variables = {}, bearer = token()) {
  let response;
  try {
    response = await fetch(GRAPHQL, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${bearer || ""}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch (failure) {
    throw new ApiError("The service could not be reached.", "UNAVAILABLE");
  }
  let payload;
  try {
    payload = await response.json();
  } catch (failure) {
    throw new ApiError(`The service answered ${response.status}.`, "INTERNAL");
  }
  if (payload.errors && payload.errors.length) {
    const first = payload.errors[0];
    const extensions = first.extensions || {};
    if (extensions.code === "UNAUTHENTICATED" && bearer === token()) signOut(first.message);
    throw new ApiError(first.message, extensions.code, extensions.field);
  }
  return payload.data;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fieldError(form, error) {
  // The API's message beside the field it names, or at the top of the form.
  for (const old of form.querySelectorAll(".error")) old.remove();
  const message = el("div", { class: "error", role: "alert", text: error.message });
  const name = error.field && CSS.escape(error.field);
  const field = name && form.querySelector(`[name="${name}"], [data-fields~="${name}"]`);
  if (field) field.closest("label").append(message);
  else form.prepend(message);
}

function number(label, value, id) {
  return el("div", { class: "number", "data-number": id }, el("b", { text: value }), label);
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function barChart(points, label) {
  const width = 600, height = 150, max = Math.max(1, ...points.map((p) => p.value));
  const step = width / Math.max(points.length, 1);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 14}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  points.forEach((point, index) => {
    const bar = document.createElementNS(svg.namespaceURI, "rect");
    const h = (point.value / max) * height;
    bar.setAttribute("x", index * step + 1);
    bar.setAttribute("y", height - h);
    bar.setAttribute("width", Math.max(step - 2, 1));
    bar.setAttribute("height", h);
    const title = document.createElementNS(svg.namespaceURI, "title");
    title.textContent = `${point.label}: ${point.value}`;
    bar.append(title);
    svg.append(bar);
  });
  for (const index of [0, points.length - 1]) {
    if (!points[index]) continue;
    const text = document.createElementNS(svg.namespaceURI, "text");
    text.setAttribute("x", index === 0 ? 0 : width);
    text.setAttribute("y", height + 12);
    text.setAttribute("text-anchor", index === 0 ? "start" : "end");
    text.textContent = points[index].label;
    svg.append(text);
  }
  return svg;
}

// ------------------------------------------------------------------ live updates

function subscribe(query, variables, onData, onError) {
  const socket = new WebSocket(GRAPHQL.href.replace(/^http/, "ws"), "graphql-transport-ws");
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${token()}` } }));
  });
  socket.binaryType = "arraybuffer"; // the server may send its JSON in binary frames
  const decoder = new TextDecoder();
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(typeof event.data === "string" ? event.data : decoder.decode(event.data));
    if (message.type === "connection_ack") {
      socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
    } else if (message.type === "next") {
      if (message.payload.errors) onError(new ApiError(message.payload.errors[0].message));
      else onData(message.payload.data);
    } else if (message.type === "error") {
      onError(new ApiError(message.payload[0]?.message || "The subscription failed."));
    } else if (message.type === "complete") {
      socket.close();
    } else if (message.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    }
  });
  return () => socket.close();
}

// ------------------------------------------------------------------ sign-in

async function signIn(bearer) {
  const data = await gql("{ me { email role tenant { name domain } } }", {}, bearer);
  if (data.me.role !== "admin") {
    throw new ApiError(`${data.me.email} is not an admin of this tenant: the console is for tenant admins.`, "FORBIDDEN");
  }
  sessionStorage.setItem(TOKEN_KEY, bearer);
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("who").textContent = `${data.me.email} · ${data.me.tenant?.domain || ""}`;
  return data.me;
}

function signOut(reason) {
  const bearer = token();
  sessionStorage.removeItem(TOKEN_KEY);
  if (bearer && !reason) gql("mutation { logout }", {}, bearer).catch(() => {});
  showSignIn(reason);
}

function showSignIn(reason) {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  const form = el("form", { id: "sign-in" },
    el("label", {}, "Tenant domain", el("input", { name: "tenantDomain", required: true, autocomplete: "organization" })),
    el("label", {}, "Email", el("input", { name: "email", type: "email", required: true, autocomplete: "username" })),
    el("label", {}, "Password", el("input", { name: "password", type: "password", required: true, autocomplete: "current-password" })),
    el("button", { type: "submit" }, "Sign in"));
  const tokenForm = el("form", { id: "token-sign-in" },
    el("label", {}, "Or an admin access token", el("input", { name: "token", type: "password", required: true, autocomplete: "off" })),
    el("button", { type: "submit", class: "plain" }, "Use token"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = Object.fromEntries(new FormData(form));
    try {
      const data = await gql("mutation($input: LoginInput!) { login(input: $input) { accessToken } }", { input }, "");
      await signIn(data.login.accessToken);
      location.hash = "#overview";
      route();
    } catch (error) {
      fieldError(form, error);
    }
  });
  tokenForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn(new FormData(tokenForm).get("token").trim());
      location.hash = "#overview";
      route();
    } catch (error) {
      fieldError(tokenForm, error);
    }
  });
  main.replaceChildren(el("h1", { text: "Sign in" }),
    reason ? el("p", { class: "error", role: "alert", text: reason }) : null,
    el("section", { class: "card" }, form), el("section", { class: "card" }, tokenForm));
}

// ------------------------------------------------------------------ pages

const OVERVIEW = `{
  tenantOverview(days: 30) { items users activeUsers interactions interactionsPerDay { day interactions } }
  modelVersions { algorithm version current createdAt metrics }
  trainingJobs(limit: 5) { jobId status algorithms createdAt error }
  online: onlineMetrics(window: "7d", groupBy: [DAY]) { day listsServed clicks conversions ctr conversionRate }
}`;

async function overview() {
  const data = await gql(OVERVIEW);
  const o = data.tenantOverview;
  const served = data.modelVersions.filter((v) => v.current);
  const online = data.online;
  return [
    el("h1", { text: "Overview" }),
    el("div", { class: "numbers" },
      number("items", o.items, "items"), number("users", o.users, "users"),
      number("active users", o.activeUsers, "activeUsers"), number("interactions", o.interactions, "interactions")),
    el("section", { class: "card" }, el("h2", { text: "Interactions per day" }),
      o.interactionsPerDay.length
        ? barChart(o.interactionsPerDay.map((d) => ({ label: d.day, value: d.interactions })), "interactions per day")
        : el("p", { class: "muted", text: "No interactions yet." })),
    el("section", { class: "card" }, el("h2", { text: "Served models" }),
      served.length ? table(["algorithm", "version", "trained", "holdout metrics"], served.map((v) => [
        v.algorithm, v.version, v.createdAt || "–", metricsText(v.metrics)]), "served-models")
        : el("p", { class: "muted", text: "No model trained yet: start one under Models." })),
    el("section", { class: "card" }, el("h2", { text: "Last training jobs" }),
      table(["job", "status", "algorithms", "started", "error"], data.trainingJobs.map((j) => [
        j.jobId, j.status, j.algorithms.join(", "), j.createdAt || "–", j.error || ""]), "jobs")),
    el("section", { class: "card" }, el("h2", { text: "Online metrics, last 7 days" }),
      online.length ? [
        barChart(online.map((g) => ({ label: g.day || "", value: Math.round(g.ctr * 1000) / 10 })), "CTR % per day"),
        table(["day", "lists", "clicks", "conversions", "CTR", "conversion rate"], online.map((g) => [
          g.day, g.listsServed, g.clicks, g.conversions, fmt(g.ctr), fmt(g.conversionRate)]), "online")]
        : el("p", { class: "muted", text: "No lists served in the last 7 days: CTR and conversion per day appear here once users get recommendations." })),
  ];
}

function metricsText(metrics) {
  const shown = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number").slice(0, 4);
  return shown.map(([k, v]) => `${k} ${fmt(v, 4)}`).join(", ") || "–";
}

function table(headers, rows, id) {
  return el("table", { "data-table": id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell))))));
}

const ITEMS = `query($search: String, $category: String) {
  items(search: $search, category: $category, limit: 50) { id externalId title category tags } }`;
const ITEM = `query($id: UUID!) { item(id: $id) { id externalId title description category tags metadata
  averageRating similarItems(topK: 5) { item { id title } score } } }`;
const ITEM_FIELDS = `id externalId title description category tags`;

async function catalogue(params) {
  const search = params.get("search") || null, category = params.get("category") || null;
  const data = await gql(ITEMS, { search, category });
  const filter = el("form", { class: "inline", id: "item-search" },
    el("label", {}, "Search", el("input", { name: "search", value: search || "" })),
    el("label", {}, "Category", el("input", { name: "category", value: category || "" })),
    el("button", { type: "submit" }, "Find"));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams(Object.entries(Object.fromEntries(new FormData(filter))).filter(([, v]) => v));
    location.hash = `#catalogue?${query}`;
  });
  const rows = data.items.map((item) => [
    el("a", { class: "item-link", href: `#item?id=${item.id}`, text: item.title }),
    item.externalId, item.category || "", item.tags.join(", ")]);
  return [el("h1", { text: "Catalogue" }), el("section", { class: "card" }, filter),
    el("section", { class: "card" }, data.items.length ? table(["title", "external id", "category", "tags"], rows, "items")
      : el("p", { class: "muted", text: "No items match." })),
    el("section", { class: "card" }, el("h2", { text: "New item" }), itemForm(null))];
}

function itemForm(item) {
  const form = el("form", { id: item ? "edit-item" : "create-item" },
    el("label", {}, "Title", el("input", { name: "title", value: item?.title || "" })),
    el("label", {}, "Category", el("input", { name: "category", value: item?.category || "" })),
    el("label", {}, "Tags (comma-separated)", el("input", { name: "tags", value: (item?.tags || []).join(", ") })),
    el("label", {}, "Description", el("textarea", { name: "description", rows: 3 }, item?.description || "")),
    el("button", { type: "submit" }, item ? "Save" : "Create"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    const input = { title: values.title.trim(), category: values.category.trim() || null,
      description: values.description.trim() || null,
      tags: values.tags.split(",").map((t) => t.trim()).filter(Boolean) };
    try {
      const saved = item
        ? (await gql(`mutation($id: UUID!, $input: ItemUpdateInput!) { updateItem(id: $id, input: $input) { ${ITEM_FIELDS} } }`, { id: item.id, input })).updateItem
        : (await gql(`mutation($input: ItemInput!) { createItem(input: $input) { ${ITEM_FIELDS} } }`, { input })).createItem;
      location.hash = `#item?id=${saved.id}`;
    } catch (error) {
      fieldError(form, error);
    }
  });
  return form;
}

async function itemPage(params) {
  const data = await gql(ITEM, { id: params.get("id") });
  const item = data.item;
  return [el("h1", { text: item.title }),
    el("section", { class: "card" }, table(["field", "value"], [
      ["id", item.id], ["external id", item.externalId], ["category", item.category || "–"],
      ["tags", item.tags.join(", ") || "–"], ["description", item.description || "–"],
      ["average rating", fmt(item.averageRating, 2)], ["metadata", JSON.stringify(item.metadata)]], "item")),
    el("section", { class: "card" }, el("h2", { text: "Similar items" }),
      item.similarItems.length ? table(["item", "score"], item.similarItems.map((s) => [
        el("a", { class: "item-link", href: `#item?id=${s.item.id}`, text: s.item.title }), fmt(s.score)]), "similar")
        : el("p", { class: "muted", text: "None yet (the models have not seen this item)." })),
    el("section", { class: "card" }, el("h2", { text: "Edit" }), itemForm(item))];
}

const USERS = `{ users(limit: 100) { id email username role } }`;
const HISTORY = `query($id: UUID!) { user(id: $id) { email interactions(limit: 10) { interactionType createdAt item { title } } } }`;
const PREVIEW = `query($user: UUID!, $options: RecommendationOptions) { previewRecommendations(userId: $user, options: $options) {
  algorithm variant recommendationId explanation { strategy enginesUsed cached modelVersion }
  items { score reason item { id title category } explanation { contributions { engine share } becauseOf { title } } } } }`;
const ALGORITHMS = ["hybrid", "als", "ease", "item_knn", "user_knn", "bpr", "svd", "popularity", "trending", "content"];

async function preview(params) {
  const users = (await gql(USERS)).users;
  const chosen = params.get("user") || users.find((u) => u.role !== "admin")?.id || users[0]?.id;
  const picker = el("form", { class: "inline", id: "pick-user" },
    el("label", {}, "User", el("select", { name: "user" }, users.map((u) =>
      el("option", { value: u.id, selected: u.id === chosen, text: `${u.username} (${u.email})` })))),
    el("button", { type: "submit" }, "Show"));
  picker.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#preview?user=${new FormData(picker).get("user")}`;
  });
  if (!chosen) return [el("h1", { text: "Preview a user" }), el("p", { class: "muted", text: "The tenant has no users yet." })];
  const history = (await gql(HISTORY, { id: chosen })).user;
  const panes = await Promise.all([optionPane("A", chosen, {}), optionPane("B", chosen, { algorithm: "popularity", diversify: false })]);
  return [el("h1", { text: "Preview a user" }), el("section", { class: "card" }, picker),
    el("section", { class: "card" }, el("h2", { text: `Recent history of ${history.email}` }),
      history.interactions.length ? table(["item", "type", "when"], history.interactions.map((i) => [
        i.item?.title || "(removed)", i.interactionType, i.createdAt]), "history")
        : el("p", { class: "muted", text: "No interactions yet: the lists below are cold-start lists." })),
    el("div", { class: "columns" }, panes)];
}

async function optionPane(name, user, initial) {
  const pane = el("section", { class: "card", "data-pane": name });
  const form = el("form", { class: "inline", id: `options-${name}` },
    el("label", {}, "Algorithm", el("select", { name: "algorithm" }, ALGORITHMS.map((a) =>
      el("option", { value: a, selected: a === (initial.algorithm || "hybrid"), text: a })))),
    el("label", {}, "Diversify", el("select", { name: "diversify" },
      el("option", { value: "true", selected: initial.diversify !== false, text: "on" }),
      el("option", { value: "false", selected: initial.diversify === false, text: "off" }))),
    el("label", {}, "Categories", el("input", { name: "categories", placeholder: "comma-separated" })),
    el("button", { type: "submit" }, "Apply"));
  const result = el("div", { class: "result" });
  async function show() {
    const values = Object.fromEntries(new FormData(form));
    const categories = values.categories.split(",").map((c) => c.trim()).filter(Boolean);
    const options = { algorithm: values.algorithm, diversify: values.diversify === "true", explain: true,
      numRecommendations: 10, filters: categories.length ? { categories } : null };
    try {
      const r = (await gql(PREVIEW, { user, options })).previewRecommendations;
      result.replaceChildren(
        el("p", { class: "muted", text: `${r.algorithm} · strategy ${r.explanation.strategy} · engines ${r.explanation.enginesUsed.join(", ") || "–"} · variant ${r.variant || "none"} · ${r.explanation.cached ? "cached" : "computed"}` }),
        table(["#", "item", "score", "why"], r.items.map((entry, index) => [
          index + 1, entry.item.title, fmt(entry.score), whyText(entry)]), `recommendations-${name}`));
    } catch (error) {
      result.replaceChildren();
      fieldError(form, error);
    }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); show(); });
  await show();
  pane.append(el("h2", { text: `Options ${name}` }), form, result);
  return pane;
}

function whyText(entry) {
  const shares = entry.explanation.contributions.map((c) => `${c.engine} ${Math.round(c.share * 100)}%`).join(", ");
  const because = entry.explanation.becauseOf.map((i) => i.title).join(", ");
  return [shares, because ? `because you liked ${because}` : entry.reason].filter(Boolean).join(" · ");
}

const MODELS = `{ modelVersions { algorithm version current createdAt metrics durationSeconds }
  trainingJobs(limit: 10) { jobId status algorithms createdAt progress error } }`;

async function models() {
  const data = await gql(MODELS);
  const byAlgorithm = new Map();
  for (const v of data.modelVersions) byAlgorithm.set(v.algorithm, [...(byAlgorithm.get(v.algorithm) || []), v]);
  const status = el("p", { id: "model-status", role: "status" });
  const sections = [...byAlgorithm].map(([algorithm, versions]) => el("section", { class: "card", "data-algorithm": algorithm },
    el("h2", { text: algorithm }),
    table(["version", "served", "trained", "holdout metrics", ""], versions.map((v) => [
      v.version, v.current ? "served" : "", v.createdAt || "–", metricsText(v.metrics),
      v.current ? "" : el("button", { class: "plain", type: "button", "data-promote": v.version, onclick: () => change(
        "mutation($a: String!, $v: String!) { promoteModel(algorithm: $a, version: $v) { version } }", { a: algorithm, v: v.version }, status) }, "Promote")]), `versions-${algorithm}`),
    versions.length > 1 ? el("button", { class: "plain", type: "button", "data-rollback": algorithm, onclick: () => change(
      "mutation($a: String!) { rollbackModel(algorithm: $a) { version } }", { a: algorithm }, status) }, "Roll back") : null));
  const train = el("form", { class: "inline", id: "train" },
    el("label", {}, "Algorithms (empty: all)", el("input", { name: "algorithms", placeholder: "als, ease" })),
    el("button", { type: "submit" }, "Start training"));
  const progress = el("div", { id: "training-progress" });
  train.addEventListener("submit", async (event) => {
    event.preventDefault();
    const names = new FormData(train).get("algorithms").split(",").map((a) => a.trim()).filter(Boolean);
    try {
      const job = (await gql("mutation($a: [String!]) { trainModel(algorithms: $a) { jobId status } }", { a: names.length ? names : null })).trainModel;
      watchJob(job.jobId, progress);
    } catch (error) {
      fieldError(train, error);
    }
  });
  return [el("h1", { text: "Models and training" }), status,
    el("section", { class: "card" }, train, progress), ...sections,
    el("section", { class: "card" }, el("h2", { text: "Training jobs" }),
      table(["job", "status", "algorithms", "started", "error"], data.trainingJobs.map((j) => [
        j.jobId, j.status, j.algorithms.join(", "), j.createdAt || "–", j.error || ""]), "jobs"))];
}

async function change(mutation, variables, status) {
  try {
    await gql(mutation, variables);
    await route();
    document.getElementById("model-status").replaceChildren(el("span", { class: "ok", text: "Done: the served version changed." }));
  } catch (error) {
    status.replaceChildren(el("span", { class: "error", role: "alert", text: error.message }));
  }
}

function watchJob(jobId, target) {
  // progress: {algorithm: {state: running | succeeded | skipped, detail}}; status: queued,
  // running, succeeded or failed.
  const bar = el("progress", { max: 1, value: 0 });
  const line = el("p", { "data-job": jobId, text: `job ${jobId}: queued` });
  const states = el("ul", { class: "muted" });
  target.replaceChildren(line, bar, states);
  const stop = subscribe("subscription($id: String!) { trainingJobUpdates(id: $id) { status algorithms progress error } }", { id: jobId },
    (data) => {
      const job = data.trainingJobUpdates;
      const progress = job.progress || {};
      const finished = Object.values(progress).filter((p) => p.state !== "running").length;
      bar.value = job.status === "succeeded" ? 1 : finished / Math.max(job.algorithms.length, 1);
      line.textContent = `job ${jobId}: ${job.status}${job.error ? ` · ${job.error}` : ""}`;
      line.dataset.status = job.status;
      states.replaceChildren(...Object.entries(progress).map(([algorithm, p]) =>
        el("li", { text: `${algorithm}: ${p.state}${p.detail ? ` (${p.detail})` : ""}` })));
      if (["succeeded", "failed"].includes(job.status)) stop();
    },
    (error) => { line.textContent = `job ${jobId}: ${error.message}`; });
  onLeave.push(stop);
}

async function importPage() {
  const form = el("form", { id: "import" },
    el("label", {}, "What the file holds", el("select", { name: "kind" },
      ["ITEMS", "INTERACTIONS", "USERS", "RATINGS"].map((k) => el("option", { value: k, text: k.toLowerCase() })))),
    el("label", {}, "File (.csv, .jsonl, .parquet)", el("input", { name: "file", "data-fields": "fileName contentBase64", type: "file", accept: ".csv,.jsonl,.ndjson,.parquet", required: true })),
    el("label", {}, "Column mapping (one per line, e.g. external_id=sku)", el("textarea", { name: "mapping", rows: 2 })),
    el("label", {}, el("span", {}, el("input", { name: "strict", type: "checkbox" }), " import nothing if a row is bad")),
    el("button", { type: "submit" }, "Import"));
  const report = el("div", { id: "import-report", role: "status" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    const values = new FormData(form);
    report.replaceChildren(el("progress"), el("span", { class: "muted", text: ` reading ${file.name}…` }));
    try {
      const content = await base64Of(file);
      report.replaceChildren(el("progress"), el("span", { class: "muted", text: ` importing ${file.name}…` }));
      const mapping = values.get("mapping").split("\n").map((m) => m.trim()).filter(Boolean);
      const result = (await gql(`mutation($input: FileImportInput!) { importFile(input: $input) {
        items users interactions ratings duplicates badCount strictRejected badRows { line reason } } }`,
      { input: { kind: values.get("kind"), fileName: file.name, contentBase64: content, mapping, strict: values.get("strict") === "on" } })).importFile;
      report.replaceChildren(
        el("p", { class: result.strictRejected ? "error" : "ok", text: result.strictRejected
          ? `Nothing imported: ${result.badCount} bad rows (strict).`
          : `Imported ${result.items} items, ${result.users} users, ${result.interactions} interactions (${result.duplicates} already there), ${result.ratings} ratings; ${result.badCount} bad rows skipped.` }),
        result.badRows.length ? table(["line", "reason"], result.badRows.map((b) => [b.line, b.reason]), "bad-rows") : null);
    } catch (error) {
      report.replaceChildren();
      if (!error.field) error.field = "file"; // a refused body (too large) is about the file
      fieldError(form, error);
    }
  });
  return [el("h1", { text: "Import" }), el("section", { class: "card" }, form, report)];
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new ApiError(`${file.name} could not be read.`, "BAD_USER_INPUT", "contentBase64"));
    reader.readAsDataURL(file);
  });
}

const EXPERIMENTS = `{ experiments(limit: 20) { id name status allocation primaryMetric createdAt promoted
  variants { name share currentShare listsServed clicks conversions metric metricLow metricHigh }
  verdict { pValue leader winner significant warning } } }`;

async function experiments() {
  const list = (await gql(EXPERIMENTS)).experiments;
  const form = el("form", { id: "create-experiment" },
    el("label", {}, "Name", el("input", { name: "name" })),
    el("label", {}, "Variants, one per line: name share algorithm", el("textarea", { name: "variants", rows: 3, text: "hybrid 0.5 hybrid\npopularity 0.5 popularity" })),
    el("label", {}, "Primary metric", el("select", { name: "primaryMetric" }, ["CTR", "CONVERSION", "REVENUE"].map((m) => el("option", { value: m, text: m })))),
    el("label", {}, "Allocation", el("select", { name: "allocation" }, ["FIXED", "BANDIT"].map((m) => el("option", { value: m, text: m })))),
    el("button", { type: "submit" }, "Start experiment"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    const variants = values.variants.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
      const [name, share, algorithm] = line.split(/\s+/);
      return { name, share: Number(share), algorithm: algorithm || null };
    });
    try {
      await gql("mutation($input: ExperimentInput!) { createExperiment(input: $input) { id } }",
        { input: { name: values.name, variants, primaryMetric: values.primaryMetric, allocation: values.allocation } });
      await route();
    } catch (error) {
      fieldError(form, error);
    }
  });
  const cards = list.map((x) => el("section", { class: "card", "data-experiment": x.id },
    el("h2", { text: `${x.name} · ${x.status} · ${x.allocation} on ${x.primaryMetric}` }),
    table(["variant", "share now", "lists", "clicks", "conversions", "metric", "95% interval", ""], x.variants.map((v) => [
      v.name, fmt(v.currentShare, 2), v.listsServed, v.clicks, v.conversions, fmt(v.metric), `${fmt(v.metricLow)}–${fmt(v.metricHigh)}`,
      x.status === "running" ? el("button", { class: "plain", type: "button", onclick: () => act(
        "mutation($id: ID!, $v: String!) { promoteVariant(experimentId: $id, variant: $v) { status } }", { id: x.id, v: v.name }) }, "Promote") : ""]), `variants-${x.id}`),
    el("p", { class: "muted", text: `p = ${x.verdict.pValue === null ? "–" : x.verdict.pValue.toExponential(2)} · leader ${x.verdict.leader || "–"} · winner ${x.verdict.winner || "none yet"}${x.verdict.warning ? ` · ${x.verdict.warning}` : ""}${x.promoted ? ` · promoted ${x.promoted}` : ""}` }),
    x.status === "running" ? el("button", { class: "plain", type: "button", onclick: () => act(
      "mutation($id: ID!) { stopExperiment(id: $id) { status } }", { id: x.id }) }, "Stop") : null));
  return [el("h1", { text: "Experiments" }), ...cards,
    list.length ? null : el("p", { class: "muted", text: "No experiments yet." }),
    el("section", { class: "card" }, el("h2", { text: "New experiment" }), form)];
}

async function act(mutation, variables) {
  try {
    await gql(mutation, variables);
    await route();
  } catch (error) {
    main.prepend(el("p", { class: "error", role: "alert", text: error.message }));
  }
}

// ------------------------------------------------------------------ routing

const PAGES = { overview, catalogue, item: itemPage, preview, models, import: importPage, experiments };
let onLeave = [];

async function route() {
  for (const stop of onLeave.splice(0)) stop();
  if (!token()) return showSignIn();
  const [name, query] = (location.hash.slice(1) || "overview").split("?");
  const page = PAGES[name] || overview;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.hash === `#${name}`);
  main.removeAttribute("data-ready");
  const started = performance.now();
  try {
    const content = await page(new URLSearchParams(query || ""));
    main.replaceChildren(...content.flat().filter(Boolean));
  } catch (error) {
    if (!token()) return;
    main.replaceChildren(el("h1", { text: "Something went wrong" }), el("p", { class: "error", role: "alert", text: error.message }));
  }
  timings[name] = performance.now() - started;
  main.dataset.ready = name;
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  if (!token()) return showSignIn();
  try {
    await signIn(token());
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    return showSignIn(error.message);
  }
  await route();
}

window.addEventListener("hashchange", () => { if (token()) route(); });
start();
