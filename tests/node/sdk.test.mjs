// The official `openai` Node.js SDK (pinned in package.json) against a running server:
// the JavaScript twin of tests/e2e/test_spine.py. tests/e2e/test_node_sdk.py starts the
// server, sets the variables below and runs `node --test tests/node/`; by hand, against
// `scripts/serve.sh`'s default models: `cd tests/node && npm ci && node --test`.
//
//   OPENAI_SERVE_BASE_URL         default http://127.0.0.1:8000/v1/openai
//   OPENAI_SERVE_CHAT_MODEL       default google/gemma-3-270m
//   OPENAI_SERVE_EMBEDDING_MODEL  default sentence-transformers/all-MiniLM-L6-v2
//   OPENAI_SERVE_IMAGE_MODEL      default openai-serve/tiny-flux-random

import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI, { BadRequestError, NotFoundError } from 'openai';

const env = process.env;
const BASE_URL = env.OPENAI_SERVE_BASE_URL ?? 'http://127.0.0.1:8000/v1/openai';
const CHAT_MODEL = env.OPENAI_SERVE_CHAT_MODEL ?? 'google/gemma-3-270m';
const EMBEDDING_MODEL =
  env.OPENAI_SERVE_EMBEDDING_MODEL ?? 'sentence-transformers/all-MiniLM-L6-v2';
const IMAGE_MODEL = env.OPENAI_SERVE_IMAGE_MODEL ?? 'openai-serve/tiny-flux-random';
const HELLO = [{ role: 'user', content: 'Hello there' }];
const PER_TEST = { timeout: 120_000 };

// Retries off: a retried request would hide the first answer's status.
const client = new OpenAI({ baseURL: BASE_URL, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });

test('chat, non-stream: shape and usage', PER_TEST, async () => {
  const r = await client.chat.completions.create({
    model: CHAT_MODEL,
    messages: HELLO,
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, CHAT_MODEL);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['length', 'stop'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('chat, stream: the non-stream text, usage on the finish_reason chunk', PER_TEST, async () => {
  const body = { model: CHAT_MODEL, messages: HELLO, max_tokens: 12, temperature: 0 };
  const whole = await client.chat.completions.create(body);
  const stream = await client.chat.completions.create({ ...body, stream: true });
  let text = '';
  const finishing = [];
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finishing.push(chunk);
    }
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finishing.length, 1, 'exactly one chunk carries finish_reason');
  // Unasked: the chunk with finish_reason carries usage (DeepInfra's convention).
  const { usage } = finishing[0];
  assert.ok(usage, 'usage on the finish_reason chunk');
  assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

test('chat, stream_options.include_usage: a last chunk with usage', PER_TEST, async () => {
  const stream = await client.chat.completions.create({
    model: CHAT_MODEL,
    messages: HELLO,
    max_tokens: 5,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.completion_tokens > 0 && last.usage.completion_tokens <= 5);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  const finishes = chunks.flatMap((c) => c.choices).filter((c) => c.finish_reason);
  assert.equal(finishes.length, 1);
});

test('completions, non-stream and stream', PER_TEST, async () => {
  const body = { model: CHAT_MODEL, prompt: 'The quick brown fox', max_tokens: 6, temperature: 0 };
  const whole = await client.completions.create(body);
  assert.equal(whole.object, 'text_completion');
  assert.match(whole.id, /^cmpl-/);
  assert.ok(whole.usage.completion_tokens > 0 && whole.usage.completion_tokens <= 6);
  let text = '';
  let usage;
  for await (const chunk of await client.completions.create({ ...body, stream: true })) {
    text += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) usage = chunk.usage;
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

test('embeddings: the SDK default (base64) and float give the same vectors', PER_TEST, async () => {
  const input = ['A cat sits on the mat.', 'The stock market fell sharply today.'];
  // No encoding_format: the SDK asks for base64 and decodes it into numbers, so the
  // wire is read through a fetch that keeps a copy of each body.
  const wire = [];
  const recording = client.withOptions({
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      wire.push({ sent: JSON.parse(init.body), received: await response.clone().json() });
      return response;
    },
  });
  const packed = await recording.embeddings.create({ model: EMBEDDING_MODEL, input });
  const floats = await client.embeddings.create({
    model: EMBEDDING_MODEL,
    input,
    encoding_format: 'float',
  });
  assert.equal(wire.length, 1);
  assert.equal(wire[0].sent.encoding_format, 'base64');
  assert.ok(wire[0].received.data.every((d) => typeof d.embedding === 'string'));
  assert.equal(packed.object, 'list');
  assert.deepEqual(
    packed.data.map((d) => d.index),
    [0, 1],
  );
  assert.ok(packed.usage.prompt_tokens > 0);
  for (const [i, item] of packed.data.entries()) {
    const decoded = item.embedding;
    const plain = floats.data[i].embedding;
    assert.equal(decoded.length, plain.length);
    assert.ok(decoded.length > 0);
    // float32 on the wire either way: base64 is its bytes, float its decimal digits.
    decoded.forEach((x, j) => assert.ok(Math.abs(x - plain[j]) < 1e-6, `${x} vs ${plain[j]}`));
  }
});

test('images: b64_json is a PNG of the asked size', PER_TEST, async () => {
  const r = await client.images.generate({
    model: IMAGE_MODEL,
    prompt: 'a lighthouse',
    size: '64x64',
    response_format: 'b64_json',
  });
  assert.equal(r.data.length, 1);
  const png = Buffer.from(r.data[0].b64_json, 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  // IHDR: width and height, big-endian, right after the signature and chunk header.
  assert.equal(png.readUInt32BE(16), 64);
  assert.equal(png.readUInt32BE(20), 64);
});

test('models.list(): every page, every model', PER_TEST, async () => {
  const ids = [];
  for await (const model of client.models.list()) {
    assert.equal(model.object, 'model');
    ids.push(model.id);
  }
  for (const wanted of [CHAT_MODEL, EMBEDDING_MODEL, IMAGE_MODEL]) {
    assert.ok(ids.includes(wanted), `${wanted} in ${ids}`);
  }
  // Page by page: the list is one page (OpenAI's /models has no cursor).
  const pages = [];
  for await (const page of (await client.models.list()).iterPages()) pages.push(page);
  assert.equal(pages.length, 1);
  assert.equal(pages[0].hasNextPage(), false);
  assert.deepEqual(
    pages[0].data.map((m) => m.id),
    ids,
  );
});

test('an unknown model is a NotFoundError', PER_TEST, async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such/model', messages: HELLO, max_tokens: 2 }),
    (err) => {
      assert.ok(err instanceof NotFoundError, String(err));
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      assert.ok(err.requestID, 'the response carries x-request-id');
      return true;
    },
  );
});

test('a bad body is a BadRequestError naming the field', PER_TEST, async () => {
  await assert.rejects(
    client.chat.completions.create({ model: CHAT_MODEL, messages: HELLO, temperature: 3 }),
    (err) => {
      assert.ok(err instanceof BadRequestError, String(err));
      assert.equal(err.status, 400);
      assert.equal(err.param, 'temperature');
      return true;
    },
  );
});

test('an AbortController ends a stream mid-way', PER_TEST, async () => {
  // Far more tokens than arrive before the abort; the e2e test then checks that the
  // engine dropped the request (its count of unfinished requests returns to 0).
  const controller = new AbortController();
  const stream = await client.completions.create(
    {
      model: CHAT_MODEL,
      prompt: 'Once upon a time',
      max_tokens: 2000,
      ignore_eos: true, // a vLLM extra the SDK passes through: no early stop
      stream: true,
    },
    { signal: controller.signal },
  );
  let chunks = 0;
  let finished = false;
  // The SDK ends the iteration quietly when its own signal aborts.
  for await (const chunk of stream) {
    chunks += 1;
    finished ||= Boolean(chunk.choices[0]?.finish_reason);
    if (chunks === 2) controller.abort();
  }
  assert.ok(controller.signal.aborted);
  assert.equal(finished, false, 'the stream ended by the abort, not by the model');
  assert.ok(chunks >= 2 && chunks < 50, `${chunks} chunks`);
});
