/**
 * One user's whole journey through the client, against the real service (`make run` on a free
 * port, a fresh SQLite file): accounts, tasks, pages, ETags, idempotency, the changes feed,
 * bulk, stats, deletes, and the errors a frontend meets.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { ApiError, createApiClient, etagOf, isApiError, type ApiClient, type Task, type TaskCreate } from "../src/api.js";
import { startService, type RunningService } from "./server.js";

/** Asserts that `promise` rejects with an ApiError of `status`, and returns it. */
async function apiError(promise: Promise<unknown>, status: number): Promise<ApiError> {
  const error: unknown = await promise.then(
    () => assert.fail(`expected an ApiError ${status}, got a success`),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof ApiError, `expected an ApiError, got ${String(error)}`);
  assert.equal(error.status, status, `${error.status}: ${error.message}`);
  return error;
}

describe("a user's journey through the client", () => {
  let service: RunningService;
  let api: ApiClient;
  let token: string | undefined;
  let userId: string;
  const email = `ada-${randomUUID()}@example.com`;
  const password = "correct horse battery";
  const created: Task[] = [];

  before(async () => {
    service = await startService();
    api = createApiClient({ baseUrl: service.url, getToken: async () => token });
  });

  after(async () => {
    await service?.stop();
  });

  it("answers the probes", async () => {
    assert.equal((await api.health()).status, "ok");
    const ready = await api.ready();
    assert.equal(ready.status, "ok");
    assert.equal(ready.database, "ok");
  });

  it("registers, logs in and knows who is asking", async () => {
    const user = await api.register({ email, password, name: "Ada" });
    assert.equal(user.email, email);
    const again = await apiError(api.register({ email, password, name: "Ada" }), 409);
    assert.equal(typeof again.detail, "string");
    assert.equal(again.task, undefined);

    const login = await api.login({ email, password });
    assert.equal(login.token_type, "bearer");
    assert.equal(login.user.id, user.id);
    token = login.access_token;
    userId = login.user.id;

    const me = await api.me();
    assert.equal(me.id, userId);
    assert.equal(me.name, "Ada");
  });

  it("refuses a wrong password with 401", async () => {
    const error = await apiError(api.login({ email, password: "not the password" }), 401);
    assert.equal(error.detail, "Incorrect email or password");
    assert.equal(error.message, "Incorrect email or password");
  });

  it("creates tasks with priorities, due dates and tags", async () => {
    const specs: TaskCreate[] = [
      { title: "Pay rent", priority: "high", due_date: "2020-01-31", tags: ["home", "money"] },
      { title: "Buy milk", description: "2 litres", tags: ["errands"] },
      { title: "Plan the offsite", priority: "medium", due_date: "2099-03-01T09:00:00Z", tags: ["work", "Q1"] },
      { title: "Write the report", priority: "high", tags: ["work"] },
      { title: "Call the plumber", priority: "low", due_date: "2099-01-02" },
    ];
    for (const spec of specs) {
      const task = await api.createTask(userId, spec);
      assert.equal(task.title, spec.title);
      assert.equal(task.version, 1);
      assert.equal(task.status, "pending");
      created.push(task);
    }
    assert.deepEqual(created[0]?.tags, ["home", "money"]);
    assert.equal(created[0]?.priority, "high");
    assert.equal(created[0]?.due_date, "2020-01-31");
    assert.equal(created[1]?.priority, "none");
  });

  it("lists with filters", async () => {
    const high = await api.listTasks(userId, { priority: ["high"], sort: "title" });
    assert.deepEqual(high.tasks.map((t) => t.title), ["Pay rent", "Write the report"]);
    assert.equal(high.total, 2);

    const either = await api.listTasks(userId, { priority: ["high", "medium"] });
    assert.equal(either.total, 3);

    const work = await api.listTasks(userId, { tag: ["WORK", "q1"] });
    assert.deepEqual(work.tasks.map((t) => t.title), ["Plan the offsite"]);

    const overdue = await api.listTasks(userId, { overdue: true });
    assert.deepEqual(overdue.tasks.map((t) => t.title), ["Pay rent"]);

    const search = await api.listTasks(userId, { q: "LITRES" });
    assert.deepEqual(search.tasks.map((t) => t.title), ["Buy milk"]);

    const dated = await api.listTasks(userId, { has_due_date: true, sort: "due_date", order: "asc" });
    assert.deepEqual(dated.tasks.map((t) => t.title), ["Pay rent", "Call the plumber", "Plan the offsite"]);

    const window = await api.listTasks(userId, {
      due_after: new Date("2098-12-31T00:00:00Z"),
      due_before: "2099-02-01",
      status: "pending",
      completed: false,
    });
    assert.deepEqual(window.tasks.map((t) => t.title), ["Call the plumber"]);

    const since = await api.listTasks(userId, { updated_since: new Date(Date.parse(created[4]!.updated_at) + 3600_000) });
    assert.equal(since.total, 0);
    assert.deepEqual(since.links, {});
  });

  it("pages with limit and offset, the total and the Link header", async () => {
    const first = await api.listTasks(userId, { sort: "created_at", limit: 2 });
    assert.equal(first.total, 5);
    assert.deepEqual(first.tasks.map((t) => t.id), [created[0]!.id, created[1]!.id]);
    assert.ok(first.links.next, "a next link");
    assert.ok(first.links.last, "a last link");
    assert.equal(first.links.prev, undefined);

    const second = await api.listTasksAt(first.links.next);
    assert.equal(second.total, 5);
    assert.deepEqual(second.tasks.map((t) => t.id), [created[2]!.id, created[3]!.id]);
    assert.ok(second.links.prev);

    const third = await api.listTasksAt(second.links.next!);
    assert.deepEqual(third.tasks.map((t) => t.id), [created[4]!.id]);
    assert.equal(third.links.next, undefined);

    const byOffset = await api.listTasks(userId, { sort: "created_at", limit: 2, offset: 4 });
    assert.deepEqual(byOffset.tasks.map((t) => t.id), [created[4]!.id]);
  });

  it("reads a task with its ETag, and 304 while it is unchanged", async () => {
    const task = created[1]!;
    const read = await api.getTask(userId, task.id);
    assert.equal(read.notModified, false);
    assert.equal(read.etag, `"${task.id}.1"`);
    assert.equal(read.etag, etagOf(task));
    if (!read.notModified) assert.equal(read.task.title, "Buy milk");

    const again = await api.getTask(userId, task.id, { ifNoneMatch: read.etag });
    assert.deepEqual(again, { notModified: true, etag: read.etag });
  });

  it("edits with If-Match, and a stale ETag is a 412 carrying the current task", async () => {
    const task = created[1]!;
    const old = etagOf(task);
    const edited = await api.updateTask(userId, task.id, { title: "Buy oat milk" }, { ifMatch: old });
    assert.equal(edited.title, "Buy oat milk");
    assert.equal(edited.version, 2);

    const stale = await apiError(api.updateTask(userId, task.id, { title: "Buy soy milk" }, { ifMatch: old }), 412);
    assert.equal(stale.task?.title, "Buy oat milk");
    assert.equal(stale.task?.version, 2);
    assert.equal(stale.etag, etagOf(edited));
    assert.ok(stale.message.length > 0);

    // Retry on top of the current version, as a frontend would after showing the change.
    const replaced = await api.replaceTask(userId, task.id, { description: null, priority: "low" }, { ifMatch: stale.etag! });
    assert.equal(replaced.title, "Buy oat milk");
    assert.equal(replaced.description, null);
    assert.equal(replaced.priority, "low");
    assert.equal(replaced.version, 3);

    await apiError(api.replaceTask(userId, task.id, { title: "x" }, { ifMatch: old }), 412);
    // The body's `version` does the same, with 409.
    const conflict = await apiError(api.updateTask(userId, task.id, { title: "y", version: 1 }), 409);
    assert.equal(conflict.task?.version, 3);
    created[1] = replaced;
  });

  it("completes and toggles", async () => {
    const task = created[4]!;
    const done = await api.completeTask(userId, task.id, { completed: true });
    assert.equal(done.completed, true);
    assert.equal(done.status, "completed");
    assert.ok(done.completed_at);
    const still = await api.completeTask(userId, task.id, { completed: true }, { ifMatch: etagOf(done) });
    assert.equal(still.completed_at, done.completed_at);
    const stale = await apiError(api.completeTask(userId, task.id, {}, { ifMatch: etagOf(task) }), 412);
    assert.equal(stale.task?.id, task.id);

    const undone = await api.toggleTask(userId, task.id);
    assert.equal(undone.completed, false);
    assert.equal(undone.completed_at, null);
    const redone = await api.toggleTask(userId, task.id);
    assert.equal(redone.status, "completed");
    const flipped = await api.completeTask(userId, created[3]!.id);
    assert.equal(flipped.completed, true);
    created[3] = flipped;
    created[4] = redone;
  });

  it("replays a create with the same Idempotency-Key instead of creating it twice", async () => {
    const before = await api.listTasks(userId, { limit: 1 });
    const key = randomUUID();
    const first = await api.createTask(userId, { title: "Renew passport" }, { idempotencyKey: key });
    const again = await api.createTask(userId, { title: "Renew passport" }, { idempotencyKey: key });
    assert.equal(again.id, first.id);
    assert.deepEqual(again, first);
    const after = await api.listTasks(userId, { limit: 1 });
    assert.equal(after.total, before.total + 1);
    const other = await apiError(api.createTask(userId, { title: "Another body" }, { idempotencyKey: key }), 422);
    assert.ok(other.detail);
    created.push(first);
  });

  it("follows the changes feed from a cursor, deletions included", async () => {
    const all = await api.getChanges(userId);
    assert.equal(all.has_more, false);
    assert.equal(all.tasks.length, created.length);
    assert.deepEqual(all.deleted, []);

    const paged = await api.getChanges(userId, { limit: 2 });
    assert.equal(paged.tasks.length, 2);
    assert.equal(paged.has_more, true);

    const edited = await api.updateTask(userId, created[0]!.id, { title: "Pay the rent" });
    await api.deleteTask(userId, created[5]!.id, { ifMatch: etagOf(created[5]!) });
    const changes = await api.getChanges(userId, { since: all.cursor });
    assert.deepEqual(changes.tasks.map((t) => [t.id, t.title]), [[edited.id, "Pay the rent"]]);
    assert.deepEqual(changes.deleted, [created[5]!.id]);
    assert.notEqual(changes.cursor, all.cursor);

    const none = await api.getChanges(userId, { since: changes.cursor });
    assert.deepEqual([none.tasks, none.deleted, none.has_more], [[], [], false]);
    await apiError(api.getChanges(userId, { since: "not-a-cursor" }), 422);
    created[0] = edited;
    created.pop();
  });

  it("creates in bulk and counts", async () => {
    const bulk = await api.createTasks(userId, [
      { title: "Milk" },
      { title: "Eggs", status: "done" },
      { title: "Bread", priority: "medium", due_date: "2000-01-01" },
    ]);
    assert.deepEqual(bulk.map((t) => [t.title, t.completed]), [["Milk", false], ["Eggs", true], ["Bread", false]]);
    const invalid = await apiError(api.createTasks(userId, [{ title: "ok" }, { title: "" }]), 422);
    assert.ok(Array.isArray(invalid.detail));

    const stats = await api.getStats(userId, { tz: "Europe/Paris" });
    assert.deepEqual(stats, { total: 8, completed: 3, pending: 5, overdue: 2, due_today: 0 });
  });

  it("deletes one task, then the completed ones", async () => {
    const gone = created[2]!;
    await api.deleteTask(userId, gone.id);
    const missing = await apiError(api.getTask(userId, gone.id), 404);
    assert.equal(missing.detail, "Task not found");
    await apiError(api.deleteTask(userId, gone.id), 404);

    const cleared = await api.deleteCompletedTasks(userId);
    assert.deepEqual(cleared, { deleted: 3 });
    const left = await api.listTasks(userId);
    assert.equal(left.total, 4);
    assert.ok(left.tasks.every((t) => !t.completed));
    assert.deepEqual(await api.deleteTasks(userId, { completed: true }), { deleted: 0 });
  });

  it("refuses another user's path with 403", async () => {
    const error = await apiError(api.listTasks("someone-else"), 403);
    assert.equal(error.detail, "You may only reach your own tasks");
    assert.ok(isApiError(error, 403));
  });

  it("refuses a missing token with 401 and its detail", async () => {
    const anonymous = createApiClient({ baseUrl: service.url, getToken: () => null });
    const error = await apiError(anonymous.listTasks(userId), 401);
    assert.equal(error.detail, "Not authenticated: send 'Authorization: Bearer <token>'");
    assert.equal(error.message, error.detail);
    assert.match(error.headers.get("WWW-Authenticate") ?? "", /Bearer/);
  });

  it("answers invalid input with 422 and the validation list", async () => {
    const error = await apiError(api.createTask(userId, { title: "x".repeat(201) }), 422);
    assert.ok(Array.isArray(error.detail), "detail is the validation list");
    const [first] = error.detail;
    assert.deepEqual(first?.loc, ["body", "title"]);
    assert.equal(typeof first?.msg, "string");
    assert.match(error.message, /^title: /);

    const query = await apiError(api.listTasks(userId, { limit: 0 }), 422);
    assert.ok(Array.isArray(query.detail));
    assert.deepEqual(query.detail[0]?.loc, ["query", "limit"]);
  });

  it("logs out: the token is revoked", async () => {
    await api.logout();
    const error = await apiError(api.me(), 401);
    assert.equal(error.detail, "Token has been revoked");
  });
});
