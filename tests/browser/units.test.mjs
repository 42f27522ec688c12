// The playground's pure modules, without a browser: SSE parsing, the snippets, stop
// sequences, the similarity maths, the Responses mode's requests and events.
// Run: node --test tests/browser/units.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

import { cosineMatrix, shade } from "../../ingress/playground/heatmap.js";
import { eventError, foldEvent, outputText, responsesBody, settle } from "../../ingress/playground/responses.js";
import { pyLiteral, snippets } from "../../ingress/playground/snippets.js";
import { SSEParser } from "../../ingress/playground/sse.js";

test("SSE: data lines, blank-line events, comments, CRLF and split chunks", () => {
  const p = new SSEParser();
  assert.deepEqual(p.push('data: {"a":1}\n\n: keep-alive\n\nda'), ['{"a":1}']);
  assert.deepEqual(p.push("ta: x\r"), []);
  assert.deepEqual(p.push("\n\r\ndata:[DONE]\n"), ["x"]);
  assert.deepEqual(p.push("\n"), ["[DONE]"]);
  assert.deepEqual(p.push("event: ping\nid: 3\ndata: one\ndata: two\n\n"), ["one\ntwo"]);
  assert.deepEqual(p.push("data: last"), []);
  assert.deepEqual(p.end(), ["last"]);
});

test("SSE: one character at a time gives the same events", () => {
  const text = 'data: {"choices":[]}\r\n\r\ndata: [DONE]\r\n\r\n';
  const p = new SSEParser();
  const events = [...text].flatMap((c) => p.push(c));
  assert.deepEqual([...events, ...p.end()], ['{"choices":[]}', "[DONE]"]);
});

test("Python literals: None/True/False, escapes kept, long values one item a line", () => {
  assert.equal(pyLiteral({ a: null, b: true, c: [false, 1.5, 'x"\n'] }), '{"a": None, "b": True, "c": [False, 1.5, "x\\"\\n"]}');
  const long = pyLiteral(["a".repeat(50), "b".repeat(50)], 4);
  assert.equal(long, `[\n        "${"a".repeat(50)}",\n        "${"b".repeat(50)}",\n    ]`);
});

const BASE = "http://127.0.0.1:8000/v1/openai";

test("snippets: curl quotes the body for the shell and never holds a key", () => {
  const body = { model: "m", messages: [{ role: "user", content: "it's" }], stream: true };
  const { curl, python, node } = snippets({ base: BASE, path: "/chat/completions", body });
  assert.match(curl, /^curl -sS -N 'http:\/\/127\.0\.0\.1:8000\/v1\/openai\/chat\/completions'/);
  assert.ok(curl.includes(`"content": "it'\\''s"`));
  assert.ok(curl.includes("Bearer ${OPENAI_API_KEY:-unused}"));
  assert.ok(python.includes("stream = client.chat.completions.create("));
  assert.ok(python.includes('api_key=os.environ.get("OPENAI_API_KEY", "unused")'));
  assert.ok(python.includes('    stream=True,'));
  assert.ok(node.includes("const stream = await client.chat.completions.create({"));
  assert.ok(node.includes('  model: "m",'));
});

test("snippets: the image seed is extra_body in Python, a plain field in Node", () => {
  const body = { model: "img", prompt: "p", n: 2, output_format: "png", response_format: "b64_json", seed: 7 };
  const { python, node } = snippets({ base: BASE, path: "/images/generations", body });
  assert.ok(python.includes('    extra_body={"seed": 7},'));
  assert.ok(!python.includes("    seed="));
  assert.ok(python.includes("base64.b64decode(image.b64_json)"));
  assert.ok(node.includes("  seed: 7"));
});

test("cosine matrix: 1 on the diagonal, symmetric, zero vectors give 0", () => {
  const m = cosineMatrix([[1, 0], [1, 1], [0, 0]]);
  assert.equal(m[0][0], 1);
  assert.ok(Math.abs(m[0][1] - Math.SQRT1_2) < 1e-12 && m[0][1] === m[1][0]);
  assert.equal(m[2][2], 0);
  assert.deepEqual(shade(-0.5), [247, 251, 255]);
  assert.deepEqual(shade(1), [8, 48, 107]);
});

test("snippets: fields the Python SDK has no argument for go in extra_body", () => {
  const body = { model: "m", prompt: "p", max_tokens: 4, stop: ["\n"], ignore_eos: true, top_k: 5 };
  const { python, node } = snippets({ base: BASE, path: "/completions", body });
  assert.ok(python.includes('    stop=["\\n"],'), python);
  assert.ok(python.includes('    extra_body={"ignore_eos": True, "top_k": 5},'), python);
  assert.ok(python.includes("print(response.choices[0].text)"));
  assert.ok(node.includes("  ignore_eos: true,") && node.includes("  top_k: 5"), node);
});

test("responses: the conversation as input items, the system prompt as instructions", () => {
  const history = [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello." },
  ];
  const body = responsesBody({
    model: "m",
    system: "Be terse.",
    history,
    message: "Again?",
    maxTokens: 16,
    temperature: 0,
    topP: undefined,
    stream: true,
    extra: { ignore_eos: true },
  });
  assert.deepEqual(body, {
    model: "m",
    input: [...history, { role: "user", content: "Again?" }],
    instructions: "Be terse.",
    max_output_tokens: 16,
    temperature: 0,
    stream: true,
    store: false,
    ignore_eos: true,
  });
  assert.equal(history.length, 2, "the history itself is left as it was");
  // No system prompt, not streamed: neither field is sent.
  const plain = responsesBody({ model: "m", system: "", history: [], message: "x", stream: false });
  assert.deepEqual(plain, { model: "m", input: [{ role: "user", content: "x" }], store: false });
});

test("responses: streamed events fold into the text, usage and status", () => {
  const usage = { input_tokens: 9, output_tokens: 3, total_tokens: 12 };
  const events = [
    { type: "response.created", response: { id: "resp_1", status: "in_progress", usage: null } },
    { type: "response.in_progress", response: { id: "resp_1", status: "in_progress" } },
    { type: "response.output_item.added", item: { type: "message", role: "assistant", content: [] } },
    { type: "response.content_part.added", part: { type: "output_text", text: "" } },
    { type: "response.output_text.delta", delta: "Hel" },
    { type: "response.output_text.delta", delta: "lo" },
    { type: "response.output_text.delta", delta: "!" },
    { type: "response.output_text.done", text: "Hello!" },
    { type: "response.content_part.done", part: { type: "output_text", text: "Hello!" } },
    { type: "response.output_item.done", item: { type: "message" } },
    { type: "response.incomplete", response: { status: "incomplete", incomplete_details: { reason: "max_output_tokens" }, usage } },
  ];
  const run = { text: "", usage: null, status: null };
  const pieces = events.map((event) => foldEvent(run, event));
  assert.deepEqual(pieces.filter(Boolean), ["Hel", "lo", "!"]);
  assert.equal(run.text, "Hello!");
  assert.deepEqual(run.usage, usage);
  assert.equal(run.status, "incomplete (max_output_tokens)");
  assert.deepEqual(events.map(eventError).filter(Boolean), []);
  foldEvent(run, { type: "response.completed", response: { status: "completed", usage } });
  assert.equal(run.status, "completed");
});

test("responses: error events, a failed response and a whole response object", () => {
  assert.deepEqual(eventError({ type: "error", code: "server_error", message: "The engine failed.", param: null }), {
    message: "The engine failed.",
    code: "server_error",
  });
  assert.deepEqual(eventError({ type: "response.failed", response: { status: "failed", error: { code: "x", message: "No." } } }), {
    message: "No.",
    code: "x",
  });
  assert.equal(eventError({ type: "response.completed", response: { status: "completed", error: null } }), null);
  const response = {
    id: "resp_2",
    object: "response",
    status: "completed",
    output: [
      { type: "reasoning", summary: [] },
      { type: "message", role: "assistant", content: [{ type: "output_text", text: "Paris", annotations: [] }, { type: "refusal", refusal: "-" }] },
    ],
    usage: { input_tokens: 5, output_tokens: 1, total_tokens: 6 },
  };
  assert.equal(outputText(response), "Paris");
  assert.equal(eventError(response), null);
  const run = {};
  settle(run, response);
  assert.deepEqual(run, { usage: response.usage, status: "completed" });
});

test("snippets: the Responses call in curl, Python and Node, streamed or not", () => {
  const body = {
    model: "m",
    input: [{ role: "user", content: "Hi" }],
    instructions: "Be terse.",
    max_output_tokens: 8,
    stream: true,
    store: false,
    ignore_eos: true,
  };
  const { curl, python, node } = snippets({ base: BASE, path: "/responses", body });
  assert.match(curl, /^curl -sS -N 'http:\/\/127\.0\.0\.1:8000\/v1\/openai\/responses'/);
  assert.ok(curl.includes('"max_output_tokens": 8'), curl);
  assert.ok(python.includes("stream = client.responses.create("), python);
  assert.ok(python.includes("    max_output_tokens=8,") && python.includes("    store=False,"), python);
  assert.ok(python.includes('    extra_body={"ignore_eos": True},'), python);
  assert.ok(python.includes('    if event.type == "response.output_text.delta":'), python);
  assert.ok(python.includes('        print("\\n", event.response.usage)'), python); // a "\n" escape, not a line break
  assert.ok(node.includes("const stream = await client.responses.create({"), node);
  assert.ok(node.includes('if (event.type === "response.output_text.delta") process.stdout.write(event.delta);'), node);

  const once = snippets({ base: BASE, path: "/responses", body: { model: "m", input: "Hi" } });
  assert.ok(once.python.includes("response = client.responses.create(") && once.python.includes("print(response.output_text)"));
  assert.ok(once.node.includes("console.log(response.output_text);"));
  assert.ok(!once.curl.includes(" -N "));
});
