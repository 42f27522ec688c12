// A request as the same call in curl, Python (`openai` SDK) and Node.js (`openai` npm),
// ready to copy. The key is never written out: each snippet reads $OPENAI_API_KEY.
// Pure: no DOM, so node's test runner loads it as it is.

const SDK_METHODS = {
  "/chat/completions": { python: "client.chat.completions.create", node: "client.chat.completions.create" },
  "/completions": { python: "client.completions.create", node: "client.completions.create" },
  "/responses": { python: "client.responses.create", node: "client.responses.create" },
  "/embeddings": { python: "client.embeddings.create", node: "client.embeddings.create" },
  "/images/generations": { python: "client.images.generate", node: "client.images.generate" },
};
// The arguments each Python SDK method has; any other field (seed for images, vLLM's
// top_k or ignore_eos) travels in extra_body. The Node SDK sends every field of its
// params object as it is.
const COMMON = ["model", "n", "seed", "stop", "stream", "stream_options", "temperature", "top_p", "user"];
const PENALTIES = ["frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "max_tokens"];
const PYTHON_ARGS = {
  "/chat/completions": new Set([
    ...COMMON,
    ...PENALTIES,
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
  ]),
  "/completions": new Set([...COMMON, ...PENALTIES, "prompt", "best_of", "echo", "suffix"]),
  "/responses": new Set([
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "store",
    "previous_response_id",
    "metadata",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "truncation",
    "user",
  ]),
  "/embeddings": new Set(["model", "input", "dimensions", "encoding_format", "user"]),
  "/images/generations": new Set([
    "model",
    "prompt",
    "n",
    "size",
    "quality",
    "style",
    "user",
    "response_format",
    "output_format",
    "output_compression",
    "background",
    "moderation",
  ]),
};

/**
 * @param {{base: string, path: string, body: object}} request
 * @returns {{curl: string, python: string, node: string}}
 */
export function snippets({ base, path, body }) {
  return { curl: curl(base, path, body), python: python(base, path, body), node: node(base, path, body) };
}

function shellQuote(text) {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

function curl(base, path, body) {
  return [
    `curl -sS${body.stream ? " -N" : ""} ${shellQuote(base + path)} \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -H "Authorization: Bearer \${OPENAI_API_KEY:-unused}" \\`,
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`,
  ].join("\n");
}

// --- Python ------------------------------------------------------------------------

/** A JSON value as a Python literal: inline when short, else one item a line. */
export function pyLiteral(value, indent = 0) {
  const inline = pyInline(value);
  if (inline.length + indent <= 88 || value === null || typeof value !== "object") return inline;
  const pad = " ".repeat(indent);
  const items = Array.isArray(value)
    ? value.map((v) => `${pad}    ${pyLiteral(v, indent + 4)},`)
    : Object.entries(value).map(([k, v]) => `${pad}    ${JSON.stringify(k)}: ${pyLiteral(v, indent + 4)},`);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return items.length ? `${open}\n${items.join("\n")}\n${pad}${close}` : `${open}${close}`;
}

function pyInline(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  // A JSON string literal is a valid Python one (the same escapes), and so is a number.
  if (typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pyInline).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyInline(v)}`).join(", ")}}`;
}

function python(base, path, body) {
  const known = PYTHON_ARGS[path];
  const args = Object.entries(body).filter(([k]) => known.has(k));
  const extra = Object.fromEntries(Object.entries(body).filter(([k]) => !known.has(k)));
  if (Object.keys(extra).length) args.push(["extra_body", extra]);
  const call = [
    `${SDK_METHODS[path].python}(`,
    ...args.map(([k, v]) => `    ${k}=${pyLiteral(v, 4)},`),
    ")",
  ].join("\n");
  const head = [
    ...(path === "/images/generations" ? ["import base64"] : []),
    "import os",
    "",
    "from openai import OpenAI",
    "",
    "client = OpenAI(",
    `    base_url=${JSON.stringify(base)},`,
    `    api_key=os.environ.get("OPENAI_API_KEY", "unused"),`,
    ")",
  ];
  return [...head, ...pythonUse(path, body, call)].join("\n");
}

function pythonUse(path, body, call) {
  if (path === "/responses") {
    if (!body.stream) return [`response = ${call}`, "print(response.output_text)", "print(response.usage)"];
    return [
      `stream = ${call}`,
      "for event in stream:",
      `    if event.type == "response.output_text.delta":`,
      `        print(event.delta, end="", flush=True)`,
      `    elif event.type in ("response.completed", "response.incomplete"):`,
      `        print("\\n", event.response.usage)`,
    ];
  }
  const text = path === "/chat/completions" ? "message.content" : "text";
  const delta = path === "/chat/completions" ? "delta.content" : "text";
  if (body.stream) {
    return [
      `stream = ${call}`,
      "for chunk in stream:",
      "    for choice in chunk.choices:",
      `        print(choice.${delta} or "", end="", flush=True)`,
      "    if not chunk.choices and chunk.usage:",
      `        print("\\n", chunk.usage)`,
    ];
  }
  if (path === "/embeddings") {
    return [`response = ${call}`, "for item in response.data:", "    print(item.index, len(item.embedding), item.embedding[:4])"];
  }
  if (path === "/images/generations") {
    return [
      `response = ${call}`,
      "for i, image in enumerate(response.data):",
      `    with open(f"image-{i}.${body.output_format ?? "png"}", "wb") as f:`,
      "        f.write(base64.b64decode(image.b64_json))",
    ];
  }
  return [`response = ${call}`, `print(response.choices[0].${text})`, "print(response.usage)"];
}

// --- Node.js -----------------------------------------------------------------------

function jsLiteral(value, indent) {
  // Keys that are identifiers lose their quotes; string values keep theirs (JSON
  // escapes every quote inside a string, so no value line can look like a key).
  const text = JSON.stringify(value, null, 2).replace(/^(\s*)"([A-Za-z_$][\w$]*)":/gm, "$1$2:");
  return text.replaceAll("\n", `\n${" ".repeat(indent)}`);
}

function node(base, path, body) {
  const call = `await ${SDK_METHODS[path].node}(${jsLiteral(body, 0)})`;
  const head = [
    ...(path === "/images/generations" ? [`import { writeFileSync } from "node:fs";`] : []),
    `import OpenAI from "openai";`,
    "",
    "const client = new OpenAI({",
    `  baseURL: ${JSON.stringify(base)},`,
    `  apiKey: process.env.OPENAI_API_KEY ?? "unused",`,
    "});",
  ];
  return [...head, ...nodeUse(path, body, call)].join("\n");
}

function nodeUse(path, body, call) {
  if (path === "/responses") {
    if (!body.stream) return [`const response = ${call};`, "console.log(response.output_text);", "console.log(response.usage);"];
    return [
      `const stream = ${call};`,
      "for await (const event of stream) {",
      `  if (event.type === "response.output_text.delta") process.stdout.write(event.delta);`,
      `  else if (event.type === "response.completed" || event.type === "response.incomplete") console.log("\\n", event.response.usage);`,
      "}",
    ];
  }
  const text = path === "/chat/completions" ? "message.content" : "text";
  const delta = path === "/chat/completions" ? "delta.content" : "text";
  if (body.stream) {
    return [
      `const stream = ${call};`,
      "for await (const chunk of stream) {",
      `  for (const choice of chunk.choices) process.stdout.write(choice.${delta} ?? "");`,
      `  if (chunk.choices.length === 0 && chunk.usage) console.log("\\n", chunk.usage);`,
      "}",
    ];
  }
  if (path === "/embeddings") {
    return [
      `const response = ${call};`,
      "for (const item of response.data) console.log(item.index, item.embedding.length, item.embedding.slice(0, 4));",
    ];
  }
  if (path === "/images/generations") {
    return [
      `const response = ${call};`,
      `response.data.forEach((image, i) => writeFileSync(\`image-\${i}.${body.output_format ?? "png"}\`, Buffer.from(image.b64_json, "base64")));`,
    ];
  }
  return [`const response = ${call};`, `console.log(response.choices[0].${text});`, "console.log(response.usage);"];
}
