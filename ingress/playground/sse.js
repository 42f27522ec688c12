// Server-sent events, the part an OpenAI stream uses: `data:` lines joined into one
// event per blank line (the WHATWG event-stream rules; comments and other fields are
// skipped). Pure: no DOM, so node's test runner loads it as it is.

export class SSEParser {
  #buffer = "";
  #data = [];

  /** Feeds decoded text; returns the data of every event it completed. */
  push(text) {
    this.#buffer += text;
    const events = [];
    for (;;) {
      const at = this.#buffer.search(/[\r\n]/);
      if (at < 0) break;
      // A "\r" that ends the buffer may be the first half of "\r\n": wait for more.
      if (this.#buffer[at] === "\r" && at === this.#buffer.length - 1) break;
      const width = this.#buffer.startsWith("\r\n", at) ? 2 : 1;
      this.#line(this.#buffer.slice(0, at), events);
      this.#buffer = this.#buffer.slice(at + width);
    }
    return events;
  }

  /** At the end of the stream: the last event, even without its blank line. */
  end() {
    const events = [];
    if (this.#buffer) this.#line(this.#buffer.replace(/\r$/, ""), events);
    this.#buffer = "";
    this.#line("", events);
    return events;
  }

  #line(line, events) {
    if (line === "") {
      if (this.#data.length) events.push(this.#data.join("\n"));
      this.#data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
  }
}

/** The data of each event of a fetch body, as it arrives. */
export async function* eventData(body) {
  const parser = new SSEParser();
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      yield* done ? parser.end() : parser.push(value);
      if (done) return;
    }
  } finally {
    // Hangs up when the reader stops early (an error event, [DONE], Stop): the server
    // sees the disconnect and aborts the engine request.
    reader.cancel().catch(() => {});
  }
}
