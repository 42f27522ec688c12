// The page's calls to the API: the key, JSON and streamed requests, and errors as the
// API words them (error.message of the body, or of an in-band `data: {"error": ...}`).

import { eventData } from "./sse.js";

const KEY_STORAGE = "openai-serve-playground.api-key";

// Relative to the page, so the playground works under any route prefix.
export const API_BASE = new URL("v1/openai", document.baseURI).href;

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) ?? "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** An error the API answered: its own message, status and code. */
export class ApiError extends Error {
  constructor(message, status = null, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

function headers() {
  const out = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say; the status is all there is
  }
  const error = body?.error;
  if (error && typeof error.message === "string") {
    return new ApiError(error.message, response.status, error.code ?? null);
  }
  return new ApiError(`HTTP ${response.status} ${response.statusText}`.trim(), response.status);
}

async function send(method, path, body, signal) {
  let response;
  try {
    response = await fetch(API_BASE + path, {
      method,
      headers: headers(),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`Could not reach the server (${err.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJSON(path, signal) {
  return (await send("GET", path, undefined, signal)).json();
}

export async function postJSON(path, body, signal) {
  return (await send("POST", path, body, signal)).json();
}

/** POSTs a streaming request and yields its chunks until `data: [DONE]`. */
export async function* postStream(path, body, signal) {
  const response = await send("POST", path, body, signal);
  for await (const data of eventData(response.body)) {
    if (data === "[DONE]") return;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ApiError(`The stream sent an unreadable event: ${data.slice(0, 80)}`);
    }
    if (chunk.error) {
      throw new ApiError(chunk.error.message ?? "The stream failed.", null, chunk.error.code);
    }
    yield chunk;
  }
}

/** What a person reads for a failed call: the API's message, never a stack. */
export function describe(err) {
  if (err instanceof ApiError) {
    const where = [err.status, err.code].filter((p) => p != null).join(" ");
    return where ? `${err.message} (${where})` : err.message;
  }
  return `Unexpected error: ${err?.message ?? err}`;
}
