// The playground's pure modules, without a browser: SSE parsing, the snippets, stop
// sequences and the similarity maths. Run: node --test tests/browser/units.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

import { cosineMatrix, shade } from "../../ingress/playground/heatmap.js";
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
