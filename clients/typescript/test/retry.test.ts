/**
 * The opt-in retry, against a tiny local HTTP server that answers 503 (`Retry-After: 1`) and
 * 429 before 200, counting what reaches it.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { after, before, beforeEach, describe, it } from "node:test";

import { ApiError, createApiClient, parseLinks, retryAfterSeconds } from "../src/api.js";

/** What the server answers next, in order; once they are used up, 200. */
let script: Array<{ status: number; headers?: Record<string, string>; body?: unknown }> = [];
let seen: Array<{ method: string; url: string; headers: IncomingMessage["headers"] }> = [];

/** The default body: a task list for GET .../tasks, one task for other successes, else an error. */
function defaultBody(request: IncomingMessage, status: number): unknown {
  if (status >= 300) return { detail: `busy (${status})` };
  const path = new URL(request.url ?? "/", "http://stub").pathname;
  return request.method === "GET" && path.endsWith("/tasks") ? [] : { id: 1, title: "t", version: 1 };
}

function answer(request: IncomingMessage, response: ServerResponse): void {
  request.resume();
  request.on("end", () => {
    seen.push({ method: request.method ?? "", url: request.url ?? "", headers: request.headers });
    const next = script.shift() ?? { status: request.method === "POST" ? 201 : 200 };
    const body = next.body ?? defaultBody(request, next.status);
    response.writeHead(next.status, { "Content-Type": "application/json", "X-Total-Count": "0", ...next.headers });
    response.end(typeof body === "string" ? body : JSON.stringify(body));
  });
}

describe("retry of idempotent calls (opt-in)", () => {
  let server: Server;
  let baseUrl: string;

  before(async () => {
    server = createServer(answer);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    assert.ok(address && typeof address === "object");
    baseUrl = `http://127.0.0.1:${address.port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  beforeEach(() => {
    script = [];
    seen = [];
  });

  const busy = (status: number, retryAfter = "1") => ({ status, headers: { "Retry-After": retryAfter } });

  it("is off by default: a 503 is thrown at once, with its Retry-After", async () => {
    const api = createApiClient({ baseUrl });
    script = [busy(503)];
    const error = await api.listTasks("alice").catch((caught: unknown) => caught);
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 503);
    assert.equal(error.retryAfter, 1);
    assert.equal(error.detail, "busy (503)");
    assert.equal(seen.length, 1);
  });

  it("retries a GET on 503 and 429, waiting as Retry-After says", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 4, maxDelayMs: 5000 } });
    script = [busy(503), busy(429), busy(503)];
    const started = Date.now();
    const page = await api.listTasks("alice", { limit: 5 });
    const elapsed = Date.now() - started;
    assert.deepEqual(page.tasks, []);
    assert.equal(seen.length, 4);
    assert.ok(seen.every((request) => request.url === "/api/alice/tasks?limit=5"));
    assert.ok(elapsed >= 2900, `waited ${elapsed} ms, Retry-After asked for 3 s in all`);
  });

  it("caps the wait at maxDelayMs, and gives up after `attempts` tries", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 2, maxDelayMs: 50 } });
    script = [busy(503, "120"), busy(503, "120"), busy(503, "120")];
    const started = Date.now();
    const error = await api.getTask("alice", 1).catch((caught: unknown) => caught);
    assert.ok(Date.now() - started < 2000);
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 503);
    assert.equal(error.retryAfter, 120);
    assert.equal(seen.length, 2);
  });

  it("honours a Retry-After given as an HTTP date", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 2, maxDelayMs: 5000 } });
    script = [busy(429, new Date(Date.now() + 1500).toUTCString())];
    const started = Date.now();
    await api.deleteTask("alice", 1);
    assert.ok(Date.now() - started >= 400, "waited for the date");
    assert.equal(seen.length, 2);
    assert.deepEqual(seen.map((r) => r.method), ["DELETE", "DELETE"]);
  });

  it("does not retry a POST without an Idempotency-Key", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 3, maxDelayMs: 100 } });
    script = [busy(503), busy(503)];
    const error = await api.createTask("alice", { title: "t" }).catch((caught: unknown) => caught);
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 503);
    assert.equal(seen.length, 1);
  });

  it("retries a POST create that has an Idempotency-Key, sending the same key", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 3, maxDelayMs: 100 } });
    script = [busy(503)];
    const task = await api.createTask("alice", { title: "t" }, { idempotencyKey: "k-1" });
    assert.equal(task.id, 1);
    assert.deepEqual(seen.map((r) => [r.method, r.headers["idempotency-key"]]), [["POST", "k-1"], ["POST", "k-1"]]);
  });

  it("retries a PATCH only with If-Match", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 3, maxDelayMs: 100 } });
    script = [busy(503)];
    await assert.rejects(api.updateTask("alice", 1, { title: "x" }), (e: unknown) => e instanceof ApiError && e.status === 503);
    assert.equal(seen.length, 1);
    seen = [];
    script = [busy(503)];
    await api.updateTask("alice", 1, { title: "x" }, { ifMatch: '"1.1"' });
    assert.deepEqual(seen.map((r) => r.headers["if-match"]), ['"1.1"', '"1.1"']);
    seen = [];
    script = [busy(429)];
    await assert.rejects(api.toggleTask("alice", 1), ApiError);
    assert.equal(seen.length, 1);
  });

  it("stops waiting for a retry when the call is aborted", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 3, maxDelayMs: 10_000 } });
    script = [busy(503, "10")];
    const started = Date.now();
    await assert.rejects(api.listTasks("alice", {}, { signal: AbortSignal.timeout(200) }), { name: "TimeoutError" });
    assert.ok(Date.now() - started < 5000);
    assert.equal(seen.length, 1);
  });

  it("surfaces a 410 of the changes feed as an ApiError, not retried", async () => {
    const api = createApiClient({ baseUrl, retry: { attempts: 3, maxDelayMs: 100 } });
    const detail = "This cursor is older than the deletions kept: sync again without since";
    script = [{ status: 410, body: { detail } }];
    const error = await api.getChanges("alice", { since: "old", limit: 50 }).catch((caught: unknown) => caught);
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 410);
    assert.equal(error.detail, detail);
    assert.equal(error.message, detail);
    assert.deepEqual(seen.map((r) => r.url), ["/api/alice/tasks/changes?since=old&limit=50"]);
  });

  it("keeps a body that is not JSON as text", async () => {
    const api = createApiClient({ baseUrl });
    script = [{ status: 502, headers: { "Content-Type": "text/html" }, body: "Bad gateway" }];
    const error = await api.health().catch((caught: unknown) => caught);
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 502);
    assert.equal(error.detail, undefined);
    assert.equal(error.body, "Bad gateway");
    assert.equal(error.message, "502: Bad gateway");
  });

  it("sends the token from getToken, awaited on every call", async () => {
    let calls = 0;
    const api = createApiClient({ baseUrl, getToken: async () => `token-${++calls}` });
    await api.listTasks("al/ice");
    await api.getStats("alice", { tz: "Europe/Paris" });
    assert.deepEqual(seen.map((r) => r.headers.authorization), ["Bearer token-1", "Bearer token-2"]);
    assert.deepEqual(seen.map((r) => r.url), ["/api/al%2Fice/tasks", "/api/alice/tasks/stats?tz=Europe%2FParis"]);
  });
});

describe("header parsing", () => {
  it("parses Retry-After as seconds or an HTTP date", () => {
    assert.equal(retryAfterSeconds("5"), 5);
    assert.equal(retryAfterSeconds(null), undefined);
    assert.equal(retryAfterSeconds("soon"), undefined);
    const inTen = retryAfterSeconds(new Date(Date.now() + 10_000).toUTCString());
    assert.ok(inTen !== undefined && inTen > 8 && inTen <= 10);
    assert.equal(retryAfterSeconds(new Date(0).toUTCString()), 0);
  });

  it("parses a Link header by rel", () => {
    const header =
      '<http://h/api/a/tasks?limit=2&offset=2>; rel="next", <http://h/api/a/tasks?limit=2&offset=0>; rel="prev", ' +
      '<http://h/api/a/tasks?limit=2&offset=0>; rel="first", <http://h/api/a/tasks?limit=2&offset=8>; rel="last"';
    assert.deepEqual(parseLinks(header), {
      next: "http://h/api/a/tasks?limit=2&offset=2",
      prev: "http://h/api/a/tasks?limit=2&offset=0",
      first: "http://h/api/a/tasks?limit=2&offset=0",
      last: "http://h/api/a/tasks?limit=2&offset=8",
    });
    assert.deepEqual(parseLinks(null), {});
  });
});
