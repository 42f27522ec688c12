// The playground's entry: tabs, the API key field, the model list, and the snippet of
// the request the active tab sends.

import { API_BASE, apiKey, setApiKey } from "./api.js";
import { chatTab } from "./chat.js";
import { completionsTab } from "./completions.js";
import { embeddingsTab } from "./embeddings.js";
import { imagesTab } from "./images.js";
import { startModels } from "./models.js";
import { snippets } from "./snippets.js";

const $ = (selector) => document.querySelector(selector);

let activeTab = "chat";
let activeLang = "curl";

function showSnippet() {
  const request = tabs[activeTab].request();
  $("#snippet").textContent = snippets({ base: API_BASE, ...request })[activeLang];
}

const tabs = {
  chat: chatTab($("#chat-form"), showSnippet),
  completions: completionsTab($("#completions-form"), showSnippet),
  embeddings: embeddingsTab($("#embeddings-form"), showSnippet),
  images: imagesTab($("#images-form"), showSnippet),
};
const TAB_OF_TASK = { chat: "chat", completion: "completions", embeddings: "embeddings", image: "images" };

function selectTab(name) {
  activeTab = name;
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== name;
  showSnippet();
}

for (const button of document.querySelectorAll("[data-tab]")) {
  button.addEventListener("click", () => selectTab(button.dataset.tab));
}
for (const button of document.querySelectorAll("[data-lang]")) {
  button.addEventListener("click", () => {
    activeLang = button.dataset.lang;
    for (const b of document.querySelectorAll("[data-lang]")) b.setAttribute("aria-selected", String(b === button));
    showSnippet();
  });
}
for (const panel of document.querySelectorAll("[data-panel] form")) {
  panel.addEventListener("input", showSnippet);
  panel.addEventListener("change", showSnippet);
}

async function copy(text) {
  // The Clipboard API needs a secure context (https or localhost); elsewhere the old
  // way still works from a click.
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

$("#copy").addEventListener("click", async () => {
  const button = $("#copy");
  try {
    await copy($("#snippet").textContent);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
});

const selects = [...document.querySelectorAll("select[data-task]")];
const refreshModels = startModels({
  groups: $("#model-groups"),
  note: $("#models-note"),
  selects,
  onChange: showSnippet,
  onPick(model, id) {
    for (const select of selects) {
      if (model.tasks.includes(select.dataset.task)) select.value = id;
    }
    selectTab(TAB_OF_TASK[model.task] ?? activeTab);
  },
});

const keyField = $("#api-key");
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  refreshModels();
});
keyField.value = apiKey();
keyField.addEventListener("input", () => setApiKey(keyField.value.trim()));
keyField.addEventListener("change", () => refreshModels());

selectTab("chat");
