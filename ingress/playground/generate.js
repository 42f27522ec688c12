// What chat and completions share: one request, streamed or not, its text reported as
// it arrives, and the numbers a person wants next to an answer.

import { describe, postJSON, postStream } from "./api.js";
import { showError } from "./dom.js";

/** A new record of one answer; `generate` fills it in as the answer arrives. */
export function newRun() {
  return { text: "", usage: null, finish: null, ttftMs: null, totalMs: null, started: performance.now() };
}

/**
 * Sends `body` to `path` (/chat/completions or /completions) and calls onText with
 * each piece of text. Throws ApiError (the API's message) or AbortError (Stop).
 */
export async function generate(path, body, signal, run, onText) {
  const take = (choice) => {
    const piece = choice.delta?.content ?? choice.message?.content ?? choice.text ?? "";
    if (piece) {
      run.ttftMs ??= performance.now() - run.started;
      run.text += piece;
      onText(piece);
    }
    if (choice.finish_reason) run.finish = choice.finish_reason;
  };
  try {
    if (body.stream) {
      for await (const chunk of postStream(path, body, signal)) {
        for (const choice of chunk.choices ?? []) take(choice);
        // Ours carry usage on the chunk with finish_reason; OpenAI's
        // stream_options.include_usage adds a last chunk with choices [].
        if (chunk.usage) run.usage = chunk.usage;
      }
    } else {
      const response = await postJSON(path, body, signal);
      for (const choice of response.choices.slice(0, 1)) take(choice);
      run.usage = response.usage ?? null;
      run.ttftMs = null; // one answer: there is no first token to time
    }
  } finally {
    run.totalMs = performance.now() - run.started;
  }
  return run;
}

/** "length · 5 prompt + 16 completion tokens · first token 85 ms · 1.2 s · 13 tokens/s" */
export function describeRun(run) {
  const parts = [];
  if (run.finish) parts.push(`finish: ${run.finish}`);
  const u = run.usage;
  if (u) parts.push(`usage: ${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`);
  if (run.ttftMs != null) parts.push(`first token ${Math.round(run.ttftMs)} ms`);
  if (run.totalMs != null) parts.push(`${(run.totalMs / 1000).toFixed(2)} s`);
  if (u && run.ttftMs != null && run.totalMs > run.ttftMs && u.completion_tokens > 1) {
    const rate = (u.completion_tokens - 1) / ((run.totalMs - run.ttftMs) / 1000);
    parts.push(`${rate.toFixed(1)} tokens/s`);
  }
  return parts.join(" · ");
}

/**
 * Wires a form's Send (submit) and Stop buttons around `work(signal)`: one request
 * at a time, Stop aborts it, and a failure shows the API's own message.
 */
export function bindRun(form, work) {
  const send = form.querySelector('[data-role="send"]');
  const stop = form.querySelector('[data-role="stop"]');
  let controller = null;
  stop?.addEventListener("click", () => controller?.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (controller) return;
    controller = new AbortController();
    send.disabled = true;
    if (stop) stop.disabled = false;
    form.dataset.state = "running";
    showError(form, null);
    let state = "done";
    try {
      await work(controller.signal);
    } catch (err) {
      if (err.name === "AbortError") {
        state = "stopped";
      } else {
        state = "failed";
        showError(form, describe(err));
      }
    } finally {
      controller = null;
      send.disabled = false;
      if (stop) stop.disabled = true;
      form.dataset.state = state;
    }
  });
}
