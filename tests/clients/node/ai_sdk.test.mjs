// The Vercel AI SDK (`ai` 6 with `@ai-sdk/openai-compatible` and `@ai-sdk/openai`, pinned in
// package.json) against a running server. tests/clients/test_ai_sdk.py starts the server,
// sets the variables below and runs `node --test` on this file; by hand, against
// `scripts/serve.sh`'s default models: `cd tests/clients/node && npm ci && node --test`.
//
//   OPENAI_SERVE_BASE_URL         default http://127.0.0.1:8000/v1/openai
//   OPENAI_SERVE_CHAT_MODEL       default google/gemma-3-270m
//   OPENAI_SERVE_EMBEDDING_MODEL  default sentence-transformers/all-MiniLM-L6-v2

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { embed, embedMany, generateText, streamText, tool } from 'ai';
import { z } from 'zod';

const env = process.env;
const BASE_URL = env.OPENAI_SERVE_BASE_URL ?? 'http://127.0.0.1:8000/v1/openai';
const CHAT_MODEL = env.OPENAI_SERVE_CHAT_MODEL ?? 'google/gemma-3-270m';
const EMBEDDING_MODEL =
  env.OPENAI_SERVE_EMBEDDING_MODEL ?? 'sentence-transformers/all-MiniLM-L6-v2';
const PROMPT = 'Hello there';
const PER_TEST = { timeout: 120_000 };
// Retries off: a retried request would hide the first failure.
const CALL = { maxRetries: 0, temperature: 0 };

// includeUsage: stream_options.include_usage, so that streams report usage.
const compatible = createOpenAICompatible({
  name: 'openai-serve',
  baseURL: BASE_URL,
  apiKey: 'unused',
  includeUsage: true,
});
const openai = createOpenAI({ baseURL: BASE_URL, apiKey: 'unused' });

function checkUsage(usage, maxOutput) {
  assert.ok(usage.inputTokens > 0, JSON.stringify(usage));
  assert.ok(usage.outputTokens > 0 && usage.outputTokens <= maxOutput, JSON.stringify(usage));
  assert.equal(usage.totalTokens, usage.inputTokens + usage.outputTokens);
}

// A stream's text parts, its finish and usage; an error part fails the test (streamText
// otherwise only logs it).
async function streamed(model, maxOutputTokens) {
  const errors = [];
  const result = streamText({
    model,
    prompt: PROMPT,
    maxOutputTokens,
    ...CALL,
    onError: ({ error }) => errors.push(error),
  });
  let text = '';
  let parts = 0;
  for await (const part of result.textStream) {
    text += part;
    parts += 1;
  }
  assert.deepEqual(errors, []);
  return {
    text,
    parts,
    whole: await result.text,
    usage: await result.usage,
    finishReason: await result.finishReason,
  };
}

test('openai-compatible: generateText', PER_TEST, async () => {
  const r = await generateText({
    model: compatible.chatModel(CHAT_MODEL),
    prompt: PROMPT,
    maxOutputTokens: 8,
    ...CALL,
  });
  assert.equal(typeof r.text, 'string');
  assert.ok(r.text.length > 0);
  assert.ok(['length', 'stop'].includes(r.finishReason), r.finishReason);
  checkUsage(r.usage, 8);
  assert.equal(r.response.modelId, CHAT_MODEL);
});

test('openai-compatible: streamText, text parts add up, usage reported', PER_TEST, async () => {
  const model = compatible.chatModel(CHAT_MODEL);
  const whole = await generateText({ model, prompt: PROMPT, maxOutputTokens: 12, ...CALL });
  const s = await streamed(model, 12);
  assert.ok(s.parts > 1, `${s.parts} text parts`);
  assert.equal(s.text, s.whole);
  assert.equal(s.text, whole.text);
  assert.equal(s.finishReason, whole.finishReason);
  checkUsage(s.usage, 12);
  assert.equal(s.usage.inputTokens, whole.usage.inputTokens);
  assert.equal(s.usage.outputTokens, whole.usage.outputTokens);
});

test('openai-compatible: a forced tool call runs the tool', PER_TEST, async () => {
  // The random model calls a tool only when forced; the server then constrains its
  // output to the tool's schema.
  const calls = [];
  const r = await generateText({
    model: compatible.chatModel(CHAT_MODEL),
    prompt: 'What is the weather in Paris?',
    tools: {
      get_weather: tool({
        description: 'The weather in Paris now, in the given unit.',
        inputSchema: z.object({ unit: z.enum(['c', 'f']), rain: z.boolean() }),
        execute: async (input) => {
          calls.push(input);
          return `20 ${input.unit}`;
        },
      }),
    },
    toolChoice: { type: 'tool', toolName: 'get_weather' },
    maxOutputTokens: 200,
    ...CALL,
  });
  assert.equal(r.finishReason, 'tool-calls');
  assert.equal(calls.length, r.toolCalls.length);
  assert.ok(calls.length >= 1);
  for (const call of calls) assert.ok(['c', 'f'].includes(call.unit) && typeof call.rain === 'boolean');
  assert.deepEqual(
    r.toolResults.map((t) => t.output),
    calls.map((c) => `20 ${c.unit}`),
  );
});

test('openai-compatible: embed and embedMany (MiniLM)', PER_TEST, async () => {
  const model = compatible.embeddingModel(EMBEDDING_MODEL);
  const one = await embed({ model, value: 'A cat sits on the mat.', maxRetries: 0 });
  const many = await embedMany({
    model,
    values: ['A cat sits on the mat.', 'The stock market fell today.'],
    maxRetries: 0,
  });
  assert.equal(one.embedding.length, 384);
  assert.ok(one.usage.tokens > 0);
  assert.equal(many.embeddings.length, 2);
  for (const v of [one.embedding, ...many.embeddings]) {
    assert.equal(v.length, 384);
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-5, `norm ${norm}`);
  }
  one.embedding.forEach((x, j) => assert.ok(Math.abs(x - many.embeddings[0][j]) < 1e-5));
});

test('openai responses: generateText', PER_TEST, async () => {
  const r = await generateText({
    model: openai.responses(CHAT_MODEL),
    prompt: PROMPT,
    maxOutputTokens: 8,
    ...CALL,
  });
  assert.equal(typeof r.text, 'string');
  assert.ok(r.text.length > 0);
  assert.ok(['length', 'stop'].includes(r.finishReason), r.finishReason);
  checkUsage(r.usage, 8);
  assert.equal(r.response.modelId, CHAT_MODEL);
  assert.ok(r.response.id, 'the response id');
});

test('openai responses: streamText, text parts add up, usage reported', PER_TEST, async () => {
  const model = openai.responses(CHAT_MODEL);
  const whole = await generateText({ model, prompt: PROMPT, maxOutputTokens: 12, ...CALL });
  const s = await streamed(model, 12);
  assert.ok(s.parts > 1, `${s.parts} text parts`);
  assert.equal(s.text, s.whole);
  assert.equal(s.text, whole.text);
  assert.equal(s.finishReason, whole.finishReason);
  checkUsage(s.usage, 12);
  assert.equal(s.usage.inputTokens, whole.usage.inputTokens);
  assert.equal(s.usage.outputTokens, whole.usage.outputTokens);
});
