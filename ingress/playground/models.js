// The model list of GET /v1/openai/models, grouped by task, with each application's
// status and replicas; refreshed while the page is open. Every id it returns (NAME,
// NAME:VERSION, deploy_id:ID, aliases) routes, so every id is selectable.

import { describe, getJSON } from "./api.js";
import { el } from "./dom.js";

export const REFRESH_MS = 5000;
const TASKS = [
  ["chat", "Chat"],
  ["completion", "Completions"],
  ["embeddings", "Embeddings"],
  ["image", "Images"],
];
const HEALTHY = new Set(["RUNNING"]);
const FAILED = new Set(["DEPLOY_FAILED", "UNHEALTHY"]);

function statusClass(status) {
  if (HEALTHY.has(status)) return "ok";
  return FAILED.has(status) ? "failed" : "pending";
}

/** Model objects grouped by application (deploy_id), in the order listed. */
function byApplication(models) {
  const apps = new Map();
  for (const m of models) {
    if (!apps.has(m.deploy_id)) apps.set(m.deploy_id, { ...m, ids: [] });
    apps.get(m.deploy_id).ids.push(m.id);
  }
  return [...apps.values()];
}

function appCard(app, onPick) {
  const name = app.ids.find((id) => !id.includes(":")) ?? app.ids[0];
  const reason = app.status_message ?? app.message;
  return el(
    "div",
    { class: `app ${statusClass(app.status)}`, dataset: { deployId: app.deploy_id } },
    el(
      "div",
      { class: "app-head" },
      el("strong", { text: name, title: name }),
      el("span", { class: "badge", text: app.status || "UNKNOWN" }),
    ),
    el("div", {
      class: "app-meta",
      text: `v${app.version} · ${app.running_replicas}/${app.target_replicas} replicas · ${app.tasks.join(", ")}`,
    }),
    reason && statusClass(app.status) !== "ok" ? el("div", { class: "app-reason", text: reason }) : null,
    el(
      "div",
      { class: "ids" },
      ...app.ids.map((id) =>
        el("button", { type: "button", class: "id", text: id, title: `Use ${id}`, onclick: () => onPick(app, id) }),
      ),
    ),
  );
}

function renderGroups(container, models, onPick) {
  const known = new Set(TASKS.map(([task]) => task));
  const other = [...new Set(models.map((m) => m.task).filter((t) => !known.has(t)))].map((t) => [t, t]);
  const sections = [];
  for (const [task, title] of [...TASKS, ...other]) {
    const apps = byApplication(models.filter((m) => m.task === task));
    if (!apps.length) continue;
    sections.push(
      el("section", { class: "group", dataset: { task } }, el("h3", { text: title }), ...apps.map((a) => appCard(a, onPick))),
    );
  }
  container.replaceChildren(...sections);
}

function fillSelect(select, models) {
  const previous = select.value;
  const apps = byApplication(models.filter((m) => m.tasks.includes(select.dataset.task)));
  select.replaceChildren(
    ...apps.map((app) =>
      el(
        "optgroup",
        { label: `${app.deploy_id} · ${app.status}` },
        ...app.ids.map((id) => el("option", { value: id, text: id })),
      ),
    ),
  );
  if (!apps.length) select.append(el("option", { value: "", text: "(no model for this task)" }));
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

/**
 * Lists the models now and every REFRESH_MS.
 * @param {{groups: Element, note: Element, selects: Element[], onPick: Function, onChange: Function}} view
 * @returns {() => Promise<void>} refresh now (after a key change, say)
 */
export function startModels({ groups, note, selects, onPick, onChange }) {
  let last = null;
  let running = null;

  async function load() {
    try {
      const { data } = await getJSON("/models");
      note.textContent = `${data.length} model ids · refreshed ${new Date().toLocaleTimeString()}`;
      note.classList.remove("failed");
      const text = JSON.stringify(data);
      if (text === last) return;
      last = text;
      renderGroups(groups, data, onPick);
      for (const select of selects) fillSelect(select, data);
      onChange();
    } catch (err) {
      note.textContent = describe(err);
      note.classList.add("failed");
      if (err.status === 401 || err.status === 403) {
        last = null;
        groups.replaceChildren();
        for (const select of selects) fillSelect(select, []);
        onChange();
      }
    }
  }

  function refresh() {
    running ??= load().finally(() => {
      running = null;
    });
    return running;
  }

  refresh();
  setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
  return refresh;
}
