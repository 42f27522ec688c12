// Cosine similarity of embeddings, drawn as a heat map on a canvas. The maths is pure
// (node's test runner loads it); drawing needs a canvas.

export function cosineMatrix(vectors) {
  const norms = vectors.map((v) => Math.hypot(...v));
  return vectors.map((a, i) =>
    vectors.map((b, j) => {
      let dot = 0;
      for (let k = 0; k < a.length; k++) dot += a[k] * b[k];
      return norms[i] && norms[j] ? dot / (norms[i] * norms[j]) : 0;
    }),
  );
}

/** Light (0 or less) to dark blue (1): a sequential scale, as RGB. */
export function shade(value) {
  const t = Math.min(1, Math.max(0, value));
  const from = [247, 251, 255];
  const to = [8, 48, 107];
  return from.map((c, i) => Math.round(c + (to[i] - c) * t));
}

/** Draws `matrix` (n×n, values in [-1, 1]) with row and column numbers 1..n. */
export function drawHeatmap(canvas, matrix, { cell = 64, margin = 28 } = {}) {
  const n = matrix.length;
  const side = margin + n * cell;
  const scale = window.devicePixelRatio || 1;
  canvas.width = side * scale;
  canvas.height = side * scale;
  canvas.style.width = `${side}px`;
  canvas.style.height = `${side}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  ctx.clearRect(0, 0, side, side);
  ctx.font = "13px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let i = 0; i < n; i++) {
    ctx.fillStyle = "#555";
    ctx.fillText(String(i + 1), margin + i * cell + cell / 2, margin / 2);
    ctx.fillText(String(i + 1), margin / 2, margin + i * cell + cell / 2);
    for (let j = 0; j < n; j++) {
      const value = matrix[i][j];
      const [r, g, b] = shade(value);
      const x = margin + j * cell;
      const y = margin + i * cell;
      ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
      ctx.fillRect(x, y, cell - 2, cell - 2);
      ctx.fillStyle = value > 0.55 ? "#fff" : "#111";
      ctx.fillText(value.toFixed(2), x + (cell - 2) / 2, y + (cell - 2) / 2);
    }
  }
}
