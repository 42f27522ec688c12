// The playground in a real browser: Debian's chromium driven by playwright-core (no
// browser download). tests/e2e/test_playground.py runs one test a time against a
// real server (--test-name-pattern), and checks the engine between them.
//
// Environment:
//   PLAYGROUND_URL         the page, e.g. http://127.0.0.1:8000/
//   PLAYGROUND_SECURE_URL  the page of an ingress with auth on (test "auth")
//   PLAYGROUND_API_KEY     a valid key of that ingress
//   CHAT_MODEL, EMBEDDINGS_MODEL, IMAGE_MODEL   model names to select
//   PLAYGROUND_OUT         where a test leaves files for pytest (snippets, a download)
//   PLAYGROUND_SCREENSHOTS where the tabs' screenshots go (default: PLAYGROUND_OUT/screenshots)
//   CHROMIUM               the browser (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `set ${name}`);
  return value;
};
const PAGE = () => env("PLAYGROUND_URL");
const OUT = process.env.PLAYGROUND_OUT ?? "/tmp/playground-test";
const SHOTS = process.env.PLAYGROUND_SCREENSHOTS ?? join(OUT, "screenshots");
const TIMEOUT = 60_000;

let browser;

before(async () => {
  mkdirSync(OUT, { recursive: true });
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh tab on the page; `problems` collects uncaught errors and CSP refusals. */
async function open(url = PAGE()) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
  page.on("console", (msg) => {
    if (/Content Security Policy|Refused to/i.test(msg.text())) problems.push(msg.text());
  });
  await page.goto(url);
  return { page, context, problems };
}

async function pickModel(page, form, model) {
  await page.waitForSelector(`${form} select[name="model"] option[value="${model}"]`, { state: "attached" });
  await page.selectOption(`${form} select[name="model"]`, model);
}

async function screenshot(page, name, dir = SHOTS) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(dir, `playground-${name}.png`) });
}

async function snippetsOf(page) {
  const out = {};
  for (const lang of ["curl", "python", "node"]) {
    await page.click(`[data-lang="${lang}"]`);
    out[lang] = await page.textContent("#snippet");
  }
  return out;
}

/** The state the form's last request ended in: done, stopped or failed. */
async function finished(page, form) {
  await page.waitForSelector(`${form}:is([data-state="done"], [data-state="stopped"], [data-state="failed"])`);
  return page.getAttribute(form, "data-state");
}

test("models", async () => {
  const { page, problems } = await open();
  const model = env("CHAT_MODEL");
  const card = page.locator(".group[data-task='chat'] .app", { hasText: model });
  await card.waitFor();
  assert.equal(await card.locator(".badge").textContent(), "RUNNING");
  assert.match(await card.locator(".app-meta").textContent(), /1\/1 replicas · chat, completion/);
  const ids = await card.locator("button.id").allTextContents();
  const deployId = ids.find((id) => id.startsWith("deploy_id:"));
  assert.ok(ids.includes(model) && ids.includes(`${model}:1`) && deployId, ids.join(" "));
  // Every id is selectable, in both text tabs.
  const options = await page.locator('#chat-form select[name="model"] option').allTextContents();
  for (const id of ids) assert.ok(options.includes(id), `${id} not in ${options}`);
  await card.locator("button.id", { hasText: deployId }).click();
  assert.equal(await page.inputValue('#chat-form select[name="model"]'), deployId);
  assert.equal(await page.inputValue('#completions-form select[name="model"]'), deployId);
  // The list refreshes while the page is open (every 5 s): it was loaded once already.
  await page.waitForRequest((r) => r.url().endsWith("/v1/openai/models"), { timeout: 8000 });

  // A failed application shows its status and reason (a list served by the test).
  await page.route("**/v1/openai/models", (route) =>
    route.fulfill({
      contentType: "application/json",
      body: JSON.stringify({
        object: "list",
        data: [
          {
            id: "org/broken",
            object: "model",
            created: 0,
            owned_by: "x",
            task: "chat",
            tasks: ["chat", "completion"],
            version: "2",
            deploy_id: "broken-2",
            status: "DEPLOY_FAILED",
            status_message: "engine failed to start: <b>out of memory</b>",
            running_replicas: 0,
            target_replicas: 1,
          },
        ],
      }),
    }),
  );
  await page.press("#api-key", "Enter"); // refreshes now
  const broken = page.locator(".app.failed", { hasText: "org/broken" });
  await broken.waitFor({ timeout: 8000 });
  assert.equal(await broken.locator(".app-reason").textContent(), "engine failed to start: <b>out of memory</b>");
  assert.equal(await page.locator(".app-reason b").count(), 0, "model text was parsed as HTML");
  assert.deepEqual(problems, []);
});

test("chat", async () => {
  const { page, context, problems } = await open();
  await pickModel(page, "#chat-form", env("CHAT_MODEL"));
  await page.fill('#chat-form [name="system"]', "You are a terse assistant.");
  await page.fill('#chat-form [name="temperature"]', "0");
  await page.fill('#chat-form [name="max_tokens"]', "120");
  await page.fill('#chat-form [name="extra"]', '{"ignore_eos": true}');
  await page.fill('#chat-form [name="message"]', "Hello! <script>alert(1)</script>");
  // Count the text updates of the answer: a streamed answer grows in many steps.
  await page.evaluate(() => {
    window.textUpdates = 0;
    new MutationObserver((records) => {
      window.textUpdates += records.filter((r) => r.type === "characterData").length;
    }).observe(document.querySelector("#chat-log"), { characterData: true, subtree: true });
  });
  const sent = page.waitForRequest((r) => r.url().endsWith("/chat/completions"));
  await page.press('#chat-form [name="message"]', "Enter");
  const body = (await sent).postDataJSON();
  assert.equal(await finished(page, "#chat-form"), "done");
  assert.deepEqual(body.stream_options, { include_usage: true });
  assert.equal(body.messages[0].content, "You are a terse assistant.");
  const answer = page.locator(".msg.assistant").last();
  assert.ok((await answer.locator(".text").textContent()).length > 0);
  assert.ok((await page.evaluate(() => window.textUpdates)) >= 3, "the answer did not stream");
  const meta = await answer.locator(".meta").textContent();
  assert.match(meta, /finish: length · usage: \d+ prompt \+ 120 completion = \d+ tokens · first token \d+ ms/);
  // User text stays text.
  assert.equal(await page.locator(".msg.user .text").first().textContent(), "Hello! <script>alert(1)</script>");

  // A second turn carries the history.
  await page.fill('#chat-form [name="max_tokens"]', "8");
  await page.fill('#chat-form [name="message"]', "And again?");
  const second = page.waitForRequest((r) => r.url().endsWith("/chat/completions"));
  await page.click('#chat-form [data-role="send"]');
  const roles = (await second).postDataJSON().messages.map((m) => m.role);
  assert.deepEqual(roles, ["system", "user", "assistant", "user"]);
  assert.equal(await finished(page, "#chat-form"), "done");
  assert.equal(await page.locator(".msg").count(), 4);
  await screenshot(page, "chat");

  // The snippets of that request, for pytest to run; Copy puts the shown one on the clipboard.
  const snippets = await snippetsOf(page);
  writeFileSync(join(OUT, "chat-snippets.json"), JSON.stringify(snippets));
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  await page.click("#copy");
  await page.waitForSelector("#copy:text('Copied')");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), snippets.node);
  assert.deepEqual(problems, []);
});

test("responses", async () => {
  const { page, problems } = await open();
  await pickModel(page, "#chat-form", env("CHAT_MODEL"));
  await page.selectOption('#chat-form [name="api"]', "responses");
  await page.fill('#chat-form [name="system"]', "You are a terse assistant.");
  await page.fill('#chat-form [name="temperature"]', "0");
  await page.fill('#chat-form [name="max_tokens"]', "24");
  await page.fill('#chat-form [name="extra"]', '{"ignore_eos": true}'); // vLLM's: kept if the server takes it
  await page.fill('#chat-form [name="message"]', "Hello!");
  await page.evaluate(() => {
    window.textUpdates = 0;
    new MutationObserver((records) => {
      window.textUpdates += records.filter((r) => r.type === "characterData").length;
    }).observe(document.querySelector("#chat-log"), { characterData: true, subtree: true });
  });
  const sent = page.waitForRequest((r) => r.url().endsWith("/v1/openai/responses"));
  await page.press('#chat-form [name="message"]', "Enter");
  const body = (await sent).postDataJSON();
  assert.equal(await finished(page, "#chat-form"), "done", await page.textContent("#chat-form .error"));
  assert.deepEqual(body.input, [{ role: "user", content: "Hello!" }]);
  assert.equal(body.instructions, "You are a terse assistant.");
  assert.equal(body.max_output_tokens, 24);
  assert.equal(body.stream, true);
  assert.equal(body.store, false);
  for (const chatOnly of ["messages", "max_tokens", "stream_options"]) assert.ok(!(chatOnly in body), chatOnly);
  const answer = page.locator(".msg.assistant").last();
  assert.ok((await answer.locator(".text").textContent()).length > 0);
  assert.ok((await page.evaluate(() => window.textUpdates)) >= 3, "the answer did not stream");
  const meta = await answer.locator(".meta").textContent();
  assert.match(meta, /^status: (completed|incomplete \(max_output_tokens\)) · usage: \d+ input \+ \d+ output = \d+ tokens · first token \d+ ms/);
  const made = Number(meta.match(/(\d+) output/)[1]);
  assert.ok(made >= 1 && made <= 24, meta);
  const firstAnswer = await answer.locator(".text").textContent();

  // A second turn sends the whole history as input again (store: false, stateless).
  await page.fill('#chat-form [name="max_tokens"]', "8");
  await page.fill('#chat-form [name="message"]', "And again?");
  const second = page.waitForRequest((r) => r.url().endsWith("/v1/openai/responses"));
  await page.click('#chat-form [data-role="send"]');
  const input = (await second).postDataJSON().input;
  assert.deepEqual(input.map((m) => m.role), ["user", "assistant", "user"]);
  assert.equal(input[1].content, firstAnswer);
  assert.equal(await finished(page, "#chat-form"), "done", await page.textContent("#chat-form .error"));
  assert.equal(await page.locator(".msg").count(), 4);

  // The snippets are the Responses call, for pytest to run.
  const snippets = await snippetsOf(page);
  assert.ok(snippets.curl.includes("/v1/openai/responses'"), snippets.curl);
  assert.ok(snippets.python.includes("stream = client.responses.create("), snippets.python);
  assert.ok(snippets.node.includes("const stream = await client.responses.create({"), snippets.node);
  writeFileSync(join(OUT, "responses-snippets.json"), JSON.stringify(snippets));
  await screenshot(page, "responses", OUT); // for a person to look at; not in the README

  // Back to Chat Completions: the same conversation, as messages.
  await page.selectOption('#chat-form [name="api"]', "chat");
  const python = (await snippetsOf(page)).python;
  assert.ok(python.includes("client.chat.completions.create(") && python.includes('"role": "assistant"'), python);
  await page.selectOption('#chat-form [name="api"]', "responses");

  // The API's own message for a bad request: the turn is given back.
  await page.fill('#chat-form [name="temperature"]', "5");
  await page.fill('#chat-form [name="message"]', "hi");
  await page.click('#chat-form [data-role="send"]');
  assert.equal(await finished(page, "#chat-form"), "failed");
  const expected = await apiMessage("/responses", {
    model: env("CHAT_MODEL"),
    input: [{ role: "user", content: "hi" }],
    temperature: 5,
  });
  const shown = await page.textContent("#chat-form .error");
  assert.ok(shown.startsWith(expected) && shown.includes("400"), `${shown} | ${expected}`);
  assert.equal(await page.locator(".msg").count(), 4);
  assert.equal(await page.inputValue('#chat-form [name="message"]'), "hi");

  // An `error` event inside the stream shows its message and code.
  await page.route("**/v1/openai/responses", (route) =>
    route.fulfill({
      contentType: "text/event-stream",
      body:
        'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_x","status":"in_progress"}}\n\n' +
        'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"partial"}\n\n' +
        'event: error\ndata: {"type":"error","code":"server_error","message":"The engine failed mid-stream.","param":null}\n\n',
    }),
  );
  await page.fill('#chat-form [name="temperature"]', "0.5");
  await page.click('#chat-form [data-role="send"]');
  assert.equal(await finished(page, "#chat-form"), "failed");
  assert.equal(await page.textContent("#chat-form .error"), "The engine failed mid-stream. (server_error)");
  assert.deepEqual(problems, []);
});

test("stop", async () => {
  const { page, problems } = await open();
  await pickModel(page, "#chat-form", env("CHAT_MODEL"));
  await page.fill('#chat-form [name="max_tokens"]', "1900");
  await page.fill('#chat-form [name="extra"]', '{"ignore_eos": true}');
  await page.fill('#chat-form [name="message"]', "Tell me a long story.");
  await page.click('#chat-form [data-role="send"]');
  const answer = page.locator(".msg.assistant .text").last();
  // Some tokens in (not just the first): the Python side samples the engine's count of
  // requests every 50 ms and must see this one running before Stop.
  await page.waitForFunction(() => document.querySelector(".msg.assistant .text")?.textContent.length > 200);
  assert.equal(await page.isEnabled('#chat-form [data-role="stop"]'), true);
  const stoppedAt = Date.now();
  await page.click('#chat-form [data-role="stop"]');
  assert.equal(await finished(page, "#chat-form"), "stopped");
  const meta = await page.locator(".msg.assistant .meta").last().textContent();
  assert.match(meta, /^stopped · /);
  const kept = (await answer.textContent()).length;
  await page.waitForTimeout(300);
  assert.equal((await answer.textContent()).length, kept, "text kept arriving after Stop");
  assert.equal(await page.isEnabled('#chat-form [data-role="send"]'), true);
  assert.equal(await page.isDisabled('#chat-form [data-role="stop"]'), true);
  writeFileSync(join(OUT, "stop.json"), JSON.stringify({ chars: kept, stoppedAt }));
  assert.deepEqual(problems, []);
});

test("completions", async () => {
  const { page, problems } = await open();
  await page.click('[data-tab="completions"]');
  await pickModel(page, "#completions-form", env("CHAT_MODEL"));
  await page.fill('#completions-form [name="prompt"]', "Once upon a time");
  await page.fill('#completions-form [name="stop"]', "\\n\nThe end");
  await page.fill('#completions-form [name="max_tokens"]', "24");
  const sent = page.waitForRequest((r) => r.url().endsWith("/v1/openai/completions"));
  await page.click('#completions-form [data-role="send"]');
  const body = (await sent).postDataJSON();
  assert.deepEqual(body.stop, ["\n", "The end"]);
  assert.equal(body.stream, true);
  assert.equal(await finished(page, "#completions-form"), "done");
  assert.equal(await page.textContent("#completion-out .prompt"), "Once upon a time");
  assert.match(await page.textContent("#completion-meta"), /finish: (stop|length) · usage: \d+ prompt \+ \d+ completion/);
  await page.click('[data-lang="python"]');
  await screenshot(page, "completions");
  assert.deepEqual(problems, []);
});

test("embeddings", async () => {
  const { page, problems } = await open();
  await page.click('[data-tab="embeddings"]');
  await pickModel(page, "#embeddings-form", env("EMBEDDINGS_MODEL"));
  await page.click('#embeddings-form [data-role="send"]');
  assert.equal(await finished(page, "#embeddings-form"), "done");
  const matrix = JSON.parse(await page.getAttribute("#heatmap", "data-matrix"));
  assert.equal(matrix.length, 4);
  for (let i = 0; i < 4; i++) {
    assert.ok(Math.abs(matrix[i][i] - 1) < 1e-3, `diagonal ${matrix[i][i]}`);
    for (let j = 0; j < 4; j++) assert.equal(matrix[i][j], matrix[j][i]);
  }
  // The cat is nearer the kitten than the stock market; the two market lines are near.
  assert.ok(matrix[0][1] > matrix[0][2] && matrix[2][3] > matrix[1][2], JSON.stringify(matrix));
  // Drawn: the canvas has pixels of the scale's dark end.
  const dark = await page.evaluate(() => {
    const c = document.querySelector("#heatmap");
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i + 3] === 255 && data[i + 2] > 90 && data[i] < 40) n++;
    return n;
  });
  assert.ok(dark > 1000, `only ${dark} dark pixels`);
  assert.equal(await page.locator("#heat-legend li").count(), 4);
  assert.match(await page.textContent("#embeddings-meta"), /4 vectors of 384 dimensions/);
  await page.click('[data-lang="node"]');
  await screenshot(page, "embeddings");
  assert.deepEqual(problems, []);
});

test("images", async () => {
  const { page, problems } = await open();
  await page.click('[data-tab="images"]');
  await pickModel(page, "#images-form", env("IMAGE_MODEL"));
  await page.fill('#images-form [name="size"]', "128x64");
  await page.fill('#images-form [name="n"]', "2");
  await page.fill('#images-form [name="seed"]', "3");
  await page.click('#images-form [data-role="send"]');
  assert.equal(await finished(page, "#images-form"), "done");
  const sizes = await page.$$eval("#image-grid img", (imgs) =>
    imgs.map((img) => img.complete && `${img.naturalWidth}x${img.naturalHeight}`),
  );
  assert.deepEqual(sizes, ["128x64", "128x64"]);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#image-grid a >> nth=0")]);
  assert.equal(download.suggestedFilename(), "image-1.png");
  const saved = join(OUT, "downloaded.png");
  await download.saveAs(saved);
  assert.deepEqual([...readFileSync(saved).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  await page.click('[data-lang="python"]');
  const python = await page.textContent("#snippet");
  assert.ok(python.includes('extra_body={"seed": 3}'), python);
  await screenshot(page, "images");
  assert.deepEqual(problems, []);
});

/** What the API itself answers to `body` (the page must show this message). */
async function apiMessage(path, body) {
  const response = await fetch(new URL(`v1/openai${path}`, PAGE()), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 400);
  return (await response.json()).error.message;
}

test("bad request", async () => {
  const { page, problems } = await open();
  const model = env("CHAT_MODEL");
  // max_tokens 0 on completions: the API's own message, with its status and code.
  await page.click('[data-tab="completions"]');
  await pickModel(page, "#completions-form", model);
  await page.fill('#completions-form [name="max_tokens"]', "0");
  await page.click('#completions-form [data-role="send"]');
  assert.equal(await finished(page, "#completions-form"), "failed");
  const expected = await apiMessage("/completions", {
    model,
    prompt: await page.inputValue('#completions-form [name="prompt"]'),
    max_tokens: 0,
  });
  const shown = await page.textContent("#completions-form .error");
  assert.ok(shown.startsWith(expected) && shown.includes("400"), `${shown} | ${expected}`);

  // temperature 5 on chat: the message, and the turn is given back to fix and resend.
  await page.click('[data-tab="chat"]');
  await pickModel(page, "#chat-form", model);
  await page.fill('#chat-form [name="temperature"]', "5");
  await page.fill('#chat-form [name="message"]', "hi");
  await page.click('#chat-form [data-role="send"]');
  assert.equal(await finished(page, "#chat-form"), "failed");
  const chatExpected = await apiMessage("/chat/completions", {
    model,
    messages: [{ role: "user", content: "hi" }],
    temperature: 5,
  });
  assert.ok((await page.textContent("#chat-form .error")).startsWith(chatExpected));
  assert.equal(await page.locator(".msg").count(), 0);
  assert.equal(await page.inputValue('#chat-form [name="message"]'), "hi");
  assert.equal(await page.isVisible("#chat-form .error"), true);
  await screenshot(page, "error", OUT); // for a person to look at; not in the README

  // A failure inside a stream (an in-band `data: {"error": ...}` event) shows its message.
  await page.route("**/v1/openai/chat/completions", (route) =>
    route.fulfill({
      contentType: "text/event-stream",
      body:
        'data: {"choices":[{"index":0,"delta":{"content":"partial"}}]}\n\n' +
        'data: {"error":{"message":"The engine failed mid-stream (request id abc).","type":"server_error","param":null,"code":null}}\n\n' +
        "data: [DONE]\n\n",
    }),
  );
  await page.fill('#chat-form [name="temperature"]', "0.5");
  await page.click('#chat-form [data-role="send"]');
  assert.equal(await finished(page, "#chat-form"), "failed");
  assert.equal(await page.textContent("#chat-form .error"), "The engine failed mid-stream (request id abc).");

  // Extra fields that are not a JSON object never reach the server.
  await page.fill('#chat-form [name="extra"]', "[1]");
  await page.click('#chat-form [data-role="send"]');
  assert.equal(await finished(page, "#chat-form"), "failed");
  assert.match(await page.textContent("#chat-form .error"), /^Extra fields must be a JSON object/);
  assert.deepEqual(problems, []);
});

test("auth", async () => {
  const url = env("PLAYGROUND_SECURE_URL");
  const { page, problems } = await open(url);
  // The page itself needs no key; its calls do, and say so in the API's words.
  await page.waitForSelector("#models-note.failed");
  const note = await page.textContent("#models-note");
  assert.equal(note, "Missing or invalid API key. Send 'Authorization: Bearer <key>'. (401 invalid_api_key)");
  assert.equal(await page.locator(".app").count(), 0);
  // With the key: the models appear, and the key outlives a reload of the tab.
  await page.fill("#api-key", env("PLAYGROUND_API_KEY"));
  await page.press("#api-key", "Enter");
  await page.locator(".app", { hasText: env("CHAT_MODEL") }).waitFor();
  await page.reload();
  assert.equal(await page.inputValue("#api-key"), env("PLAYGROUND_API_KEY"));
  await page.click('[data-tab="completions"]');
  await pickModel(page, "#completions-form", env("CHAT_MODEL"));
  await page.fill('#completions-form [name="max_tokens"]', "4");
  const sent = page.waitForRequest((r) => r.url().endsWith("/completions"));
  await page.click('#completions-form [data-role="send"]');
  assert.equal((await sent).headers().authorization, `Bearer ${env("PLAYGROUND_API_KEY")}`);
  assert.equal(await finished(page, "#completions-form"), "done");
  // The snippets never show the key.
  for (const snippet of Object.values(await snippetsOf(page))) {
    assert.ok(!snippet.includes(env("PLAYGROUND_API_KEY")));
  }
  assert.deepEqual(problems, []);
});
