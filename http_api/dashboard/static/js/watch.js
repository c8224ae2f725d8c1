// How the task page learns about changes: one function, so it can move to the event stream
// (GET /api/v1/task/{id}/events, SPEC §11) once that exists. Until then it polls the task every
// POLL_MS and stops when the task has ended or the page is left.
import { api } from "./api.js";

export const POLL_MS = 500;

/** Call onTask(task) with the task now and on each change until it ends; returns stop(). */
export function watchTask(taskId, onTask, onError) {
  let stopped = false;
  let timer = null;
  let last = "";
  async function tick() {
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
    timer = setTimeout(tick, POLL_MS);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
