// How the task page learns what happens: the task's event stream (GET /api/v1/task/{id}/events,
// SPEC §11: task, node, progress, log and token events, ids 1, 2, …), read with fetch() and a
// stream parser because EventSource cannot send the Authorization header the dashboard signs in
// with (the key lives in this tab's sessionStorage, never in a cookie). A dropped stream is
// resumed with Last-Event-ID (no gap, no duplicate); when the stream cannot be had, or drops
// MAX_DROPS times in a row, the page polls the task every POLL_MS instead, as it did before.
import { api, failure, key } from "./api.js";
import { EventStreamParser } from "./sse.js";

export const POLL_MS = 500;
const MAX_DROPS = 3;
const RETRY_MS = 1000;  // until the server says (its "retry:" field)

/**
 * Follow task `taskId` until it ends; returns stop().
 * - onEvent(kind, data, id): each event of the stream, history first (kind: task|node|progress|log|token).
 * - onTask(task): the task with its outputs, when polling (the stream failed).
 * - onMode("stream" | "poll"): how it is followed now.
 * - onError(error): an error to show (a 4xx ends the watch).
 */
export function watchTask(taskId, { onEvent, onTask, onMode = () => {}, onError }) {
  const controller = new AbortController();
  let stopped = false;
  let timer = null;
  const sleep = (ms) => new Promise((resolve) => { timer = setTimeout(resolve, ms); });

  async function follow() {
    let lastId = "0";
    let drops = 0;
    let retryMs = RETRY_MS;
    onMode("stream");
    while (!stopped && drops < MAX_DROPS) {
      const parser = new EventStreamParser();
      try {
        const token = key.get();
        const response = await fetch(`/api/v1/task/${taskId}/events`, {
          credentials: "omit", signal: controller.signal,
          headers: { Authorization: `Basic ${token}`, Accept: "text/event-stream", "Last-Event-ID": lastId },
        });
        if (!response.ok) {
          const error = await failure(response, token);
          if (response.status >= 400 && response.status < 500 && response.status !== 404) { onError(error); return; }
          break;  // no stream here (a 404 from a server without it, a 5xx): poll
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.feed(value)) {
            lastId = event.id || lastId;
            drops = 0;
            const data = JSON.parse(event.data);
            onEvent(event.event, data, Number(lastId));
            if (event.event === "task" && data.status >= 3) return;  // the final event: the stream ends
          }
        }
      } catch (error) {
        if (stopped) return;
      }
      // Closed or dropped before the final event (a server restarting): resume where it stopped.
      drops += 1;
      retryMs = parser.retryMs ?? retryMs;
      if (drops < MAX_DROPS) await sleep(retryMs);
    }
    if (!stopped) poll();
  }

  async function poll() {
    onMode("poll");
    let last = "";
    while (!stopped) {
      try {
        const task = await api("GET", `/task/${taskId}?include=outputs`);
        if (stopped) return;
        // Signed file links are made per answer: leave them out when asking "did anything change?".
        const text = JSON.stringify([task.status, task.nodes, task.result, task.error], (k, v) => (k === "url" ? undefined : v));
        if (text !== last) { last = text; onTask(task); }
        if (task.status >= 3) return;  // 3 succeeded, 4 failed, 5 cancelled: nothing more will change
      } catch (error) {
        if (stopped) return;
        onError(error);
        if (error.status && error.status < 500) return;
      }
      await sleep(POLL_MS);
    }
  }

  follow();
  return () => { stopped = true; clearTimeout(timer); controller.abort(); };
}
