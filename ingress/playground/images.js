// Images: prompt, size, n, seed; each image shown and downloadable.

import { postJSON } from "./api.js";
import { defined, el, numberField } from "./dom.js";
import { bindRun } from "./generate.js";

const PATH = "/images/generations";
const MEDIA_TYPES = { png: "image/png", jpeg: "image/jpeg", webp: "image/webp" };

export function imagesTab(form, changed) {
  const grid = form.querySelector("#image-grid");
  const meta = form.querySelector("#images-meta");

  function body() {
    return defined({
      model: form.elements.model.value || undefined,
      prompt: form.elements.prompt.value,
      n: numberField(form, "n"),
      size: form.elements.size.value.trim() || undefined,
      output_format: form.elements.output_format.value,
      response_format: "b64_json",
      seed: numberField(form, "seed"),
    });
  }

  bindRun(form, async (signal) => {
    const request = body();
    const started = performance.now();
    const response = await postJSON(PATH, request, signal);
    const format = request.output_format;
    grid.replaceChildren(
      ...response.data.map((image, i) => {
        const url = `data:${MEDIA_TYPES[format]};base64,${image.b64_json}`;
        return el(
          "figure",
          {},
          el("img", { src: url, alt: `image ${i + 1}: ${request.prompt}` }),
          el("figcaption", {}, el("a", { href: url, download: `image-${i + 1}.${format}`, text: "Download" })),
        );
      }),
    );
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    meta.textContent = `${response.data.length} image(s) · ${request.size ?? "default size"} · ${seconds} s`;
  });

  return {
    request() {
      return { path: PATH, body: body() };
    },
  };
}
