// Server-sent events: the text/event-stream parser of the WHATWG HTML standard (§9.2.6), for a
// stream read with fetch() (EventSource cannot send the Authorization header the dashboard signs
// in with). Fed text as it arrives, cut anywhere; gives back the events each piece completes.
export class EventStreamParser {
  constructor() {
    this.lastEventId = "";
    this.retryMs = null;
    this.buffer = "";
    this.afterCr = false;  // a piece ended on CR: a LF opening the next one belongs to it
    this.data = [];
    this.event = "";
  }

  /** The events that `text` completes: {id, event, data}. */
  feed(text) {
    if (this.afterCr && text.startsWith("\n")) text = text.slice(1);
    this.afterCr = text.endsWith("\r");
    const lines = (this.buffer + text).split(/\r\n|\r|\n/);
    this.buffer = lines.pop();  // an unfinished line waits for the next piece
    const events = [];
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) events.push({ id: this.lastEventId, event: this.event || "message", data: this.data.join("\n") });
        this.data = [];
        this.event = "";
        continue;
      }
      if (line.startsWith(":")) continue;  // a comment: the server's keep-alive
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") this.data.push(value);
      else if (name === "event") this.event = value;
      else if (name === "id" && !value.includes("\0")) this.lastEventId = value;
      else if (name === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    }
    return events;
  }
}
