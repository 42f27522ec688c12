// Embeddings: sentences in (one a line), their cosine-similarity matrix out.

import { postJSON } from "./api.js";
import { el } from "./dom.js";
import { bindRun } from "./generate.js";
import { cosineMatrix, drawHeatmap } from "./heatmap.js";

const PATH = "/embeddings";

export function embeddingsTab(form, changed) {
  const canvas = form.querySelector("#heatmap");
  const legend = form.querySelector("#heat-legend");
  const meta = form.querySelector("#embeddings-meta");

  function body() {
    const input = form.elements.input.value.split("\n").map((s) => s.trim()).filter(Boolean);
    return { model: form.elements.model.value, input };
  }

  bindRun(form, async (signal) => {
    const request = body();
    const started = performance.now();
    const response = await postJSON(PATH, request, signal);
    const vectors = [...response.data].sort((a, b) => a.index - b.index).map((d) => d.embedding);
    const matrix = cosineMatrix(vectors);
    drawHeatmap(canvas, matrix);
    canvas.dataset.matrix = JSON.stringify(matrix.map((row) => row.map((v) => Number(v.toFixed(4)))));
    legend.replaceChildren(...request.input.map((text) => el("li", { text })));
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    meta.textContent = `${vectors.length} vectors of ${vectors[0]?.length ?? 0} dimensions · ${response.usage?.prompt_tokens ?? "?"} tokens · ${seconds} s`;
  });

  return {
    request() {
      return { path: PATH, body: body() };
    },
  };
}
