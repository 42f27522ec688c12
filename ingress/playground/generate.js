// What chat (in either API) and completions share: one request, streamed or not, its
// text reported as it arrives, and the numbers a person wants next to an answer.

import { ApiError, describe, postJSON, postStream } from "./api.js";
import { showError } from "./dom.js";
import { eventError, foldEvent, outputText, RESPONSES_PATH, settle } from "./responses.js";

/** A new record of one answer; `generate` fills it in as the answer arrives. */
export function newRun() {
  return { text: "", usage: null, finish: null, status: null, ttftMs: null, totalMs: null, started: performance.now() };
}

/**
 * Sends `body` to `path` (/chat/completions, /completions or /responses) and calls
 * onText with each piece of text. Throws ApiError (the API's message) or AbortError (Stop).
 */
export async function generate(path, body, signal, run, onText) {
  if (path === RESPONSES_PATH) return respond(body, signal, run, onText);
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

async function respond(body, signal, run, onText) {
  const fail = (error) => {
    if (error) throw new ApiError(error.message, null, error.code);
  };
  try {
    if (body.stream) {
      // Each event's JSON names its own type, so the `event:` line is not needed.
      for await (const event of postStream(RESPONSES_PATH, body, signal)) {
        fail(eventError(event));
        const piece = foldEvent(run, event);
        if (piece) {
          run.ttftMs ??= performance.now() - run.started;
          onText(piece);
        }
      }
    } else {
      const response = await postJSON(RESPONSES_PATH, body, signal);
      fail(eventError(response));
      run.text = outputText(response);
      if (run.text) onText(run.text);
      settle(run, response);
    }
  } finally {
    run.totalMs = performance.now() - run.started;
  }
  return run;
}

/**
 * "finish: length · usage: 5 prompt + 16 completion = 21 tokens · first token 85 ms · 1.20 s · 13.0 tokens/s";
 * Responses: "status: completed · usage: 5 input + 16 output = 21 tokens · ..."
 */
export function describeRun(run) {
  const parts = [];
  if (run.finish) parts.push(`finish: ${run.finish}`);
  if (run.status) parts.push(`status: ${run.status}`);
  const u = run.usage;
  // Chat and completions count prompt + completion tokens; Responses input + output.
  const made = u?.completion_tokens ?? u?.output_tokens;
  if (u?.input_tokens != null) parts.push(`usage: ${u.input_tokens} input + ${u.output_tokens} output = ${u.total_tokens} tokens`);
  else if (u) parts.push(`usage: ${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`);
  if (run.ttftMs != null) parts.push(`first token ${Math.round(run.ttftMs)} ms`);
  if (run.totalMs != null) parts.push(`${(run.totalMs / 1000).toFixed(2)} s`);
  if (u && run.ttftMs != null && run.totalMs > run.ttftMs && made > 1) {
    const rate = (made - 1) / ((run.totalMs - run.ttftMs) / 1000);
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
