// Chat: a system prompt, a multi-turn history, sampling settings, streamed answers;
// sent as Chat Completions or, in the Responses mode, as the Responses API.

import { defined, el, extraFields, numberField } from "./dom.js";
import { bindRun, describeRun, generate, newRun } from "./generate.js";
import { RESPONSES_PATH, responsesBody } from "./responses.js";

const PATH = "/chat/completions";

export function chatTab(form, changed) {
  const log = form.querySelector("#chat-log");
  const history = []; // the turns so far: {role, content}
  let last = null; // the request last sent: {path, body}

  // The mode switch: both modes send the same history, so a conversation can change mode.
  const path = () => (form.elements.api.value === "responses" ? RESPONSES_PATH : PATH);

  function body(userText, strict = false) {
    const system = form.elements.system.value.trim();
    const stream = form.elements.stream.checked;
    if (path() === RESPONSES_PATH) {
      return responsesBody({
        model: form.elements.model.value,
        system,
        history,
        message: userText,
        maxTokens: numberField(form, "max_tokens"),
        temperature: numberField(form, "temperature"),
        topP: numberField(form, "top_p"),
        stream,
        extra: extraFields(form, { strict }),
      });
    }
    return defined({
      model: form.elements.model.value,
      messages: [
        ...(system ? [{ role: "system", content: system }] : []),
        ...history,
        { role: "user", content: userText },
      ],
      temperature: numberField(form, "temperature"),
      max_tokens: numberField(form, "max_tokens"),
      top_p: numberField(form, "top_p"),
      stream: stream || undefined,
      stream_options: stream ? { include_usage: true } : undefined,
      ...extraFields(form, { strict }),
    });
  }

  function bubble(role, text) {
    const textNode = document.createTextNode(text);
    const meta = el("div", { class: "meta" });
    const node = el("div", { class: `msg ${role}` }, el("div", { class: "role", text: role }), el("div", { class: "text" }, textNode), meta);
    log.append(node);
    log.scrollTop = log.scrollHeight;
    return { node, textNode, meta };
  }

  bindRun(form, async (signal) => {
    const userText = form.elements.message.value.trim();
    if (!userText) return;
    const request = body(userText, true);
    const requestPath = path();
    last = { path: requestPath, body: request };
    changed();
    const user = bubble("user", userText);
    const answer = bubble("assistant", "");
    answer.node.classList.add("streaming");
    form.elements.message.value = "";
    const run = newRun();
    try {
      await generate(requestPath, request, signal, run, (piece) => {
        answer.textNode.appendData(piece);
        log.scrollTop = log.scrollHeight;
      });
      answer.meta.textContent = describeRun(run);
      history.push({ role: "user", content: userText }, { role: "assistant", content: run.text });
    } catch (err) {
      if (err.name !== "AbortError") {
        // Nothing was said: take the turn back, so it can be fixed and sent again.
        user.node.remove();
        answer.node.remove();
        form.elements.message.value = userText;
        throw err;
      }
      answer.meta.textContent = `stopped · ${describeRun(run)}`;
      history.push({ role: "user", content: userText }, { role: "assistant", content: run.text });
      throw err;
    } finally {
      answer.node.classList.remove("streaming");
    }
  });

  form.querySelector('[data-role="clear"]').addEventListener("click", () => {
    history.length = 0;
    last = null;
    log.replaceChildren();
    changed();
  });

  form.elements.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  return {
    request() {
      const pending = form.elements.message.value.trim();
      if (!pending && last?.path === path()) return last;
      return { path: path(), body: body(pending || "Hello!") };
    },
  };
}
