// Completions: a raw prompt, stop sequences, streamed text.

import { defined, el, extraFields, numberField } from "./dom.js";
import { bindRun, describeRun, generate, newRun } from "./generate.js";

const PATH = "/completions";
const ESCAPES = { n: "\n", t: "\t", "\\": "\\" };

/** One stop sequence a line; \n, \t and \\ are escapes (a newline is a common stop). */
export function stopSequences(text) {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => line.replace(/\\([nt\\])/g, (_, c) => ESCAPES[c]));
}

export function completionsTab(form, changed) {
  const out = form.querySelector("#completion-out");
  const meta = form.querySelector("#completion-meta");

  function body(strict = false) {
    const stop = stopSequences(form.elements.stop.value);
    return defined({
      model: form.elements.model.value,
      prompt: form.elements.prompt.value,
      max_tokens: numberField(form, "max_tokens"),
      temperature: numberField(form, "temperature"),
      top_p: numberField(form, "top_p"),
      stop: stop.length ? stop : undefined,
      stream: form.elements.stream.checked || undefined,
      ...extraFields(form, { strict }),
    });
  }

  bindRun(form, async (signal) => {
    const request = body(true);
    const answer = document.createTextNode("");
    out.replaceChildren(el("span", { class: "prompt", text: request.prompt }), el("span", { class: "answer" }, answer));
    meta.textContent = "";
    const run = newRun();
    try {
      await generate(PATH, request, signal, run, (piece) => answer.appendData(piece));
      meta.textContent = describeRun(run);
    } catch (err) {
      if (err.name === "AbortError") meta.textContent = `stopped · ${describeRun(run)}`;
      throw err;
    }
  });

  return {
    request() {
      return { path: PATH, body: body() };
    },
  };
}
