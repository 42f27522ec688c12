// The chat tab's Responses mode (POST /responses): the request of a conversation, and
// its answer read from a response object or from the streamed events. Pure: no DOM,
// so node's test runner loads it as it is.

export const RESPONSES_PATH = "/responses";

/**
 * The Responses request for a conversation: `history` ({role, content} turns) and the
 * new user `message`. The whole history travels as `input` with store: false, every
 * turn: stateless and the simplest correct choice (previous_response_id would need the
 * server to keep each answer, and a changed system prompt, model or a Clear to reset
 * the chain).
 */
export function responsesBody({ model, system, history, message, maxTokens, temperature, topP, stream, extra = {} }) {
  const body = {
    model,
    input: [...history, { role: "user", content: message }],
    instructions: system || undefined,
    max_output_tokens: maxTokens,
    temperature,
    top_p: topP,
    stream: stream || undefined,
    store: false,
    ...extra,
  };
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

/** The text of a response object: its messages' output_text parts. */
export function outputText(response) {
  return (response.output ?? [])
    .filter((item) => item.type === "message")
    .flatMap((item) => item.content ?? [])
    .filter((part) => part.type === "output_text")
    .map((part) => part.text)
    .join("");
}

/** Takes a finished response's usage and status into `run`: "incomplete (max_output_tokens)". */
export function settle(run, response) {
  run.usage = response.usage ?? null;
  const reason = response.incomplete_details?.reason;
  run.status = reason ? `${response.status} (${reason})` : (response.status ?? null);
}

/**
 * Folds one streamed event into `run` ({text, usage, status}): returns the text it adds
 * ("" for the others). The whole response comes back in response.completed (or
 * response.incomplete), with its usage.
 */
export function foldEvent(run, event) {
  if (event.type === "response.output_text.delta") {
    run.text += event.delta ?? "";
    return event.delta ?? "";
  }
  if (event.type === "response.completed" || event.type === "response.incomplete") settle(run, event.response);
  return "";
}

/** The failure an event (or a response object) reports, as {message, code}; else null. */
export function eventError(event) {
  if (event.type === "error") {
    const error = event.error ?? event; // OpenAI's shape is flat: {type, code, message, param}
    return { message: error.message ?? "The stream failed.", code: error.code ?? null };
  }
  const failed = event.type === "response.failed" ? event.response : event.status === "failed" ? event : null;
  if (!failed) return null;
  return { message: failed.error?.message ?? "The response failed.", code: failed.error?.code ?? null };
}
