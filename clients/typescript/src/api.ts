/**
 * A typed, dependency-free client for the Todo API, built on `fetch`.
 *
 * Copy this file into a Next.js app as `lib/api.ts`, together with `schema.ts` (the types
 * generated from the service's OpenAPI document, imported below) as `lib/schema.ts`.
 *
 * ```ts
 * const api = createApiClient({
 *   baseUrl: process.env.NEXT_PUBLIC_API_URL ?? "http://127.0.0.1:8000",
 *   getToken: async () => (await authClient.token()).data?.token,
 * });
 * const { tasks, total } = await api.listTasks(userId, { status: "pending", limit: 20 });
 * ```
 *
 * Every failed call throws an {@link ApiError}.
 */
import type { components } from "./schema";

type Schemas = components["schemas"];
/** `T` with the keys `K` made optional (fields the service gives a default). */
type Optional<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

/** A task as every route returns it. */
export type Task = Schemas["TaskPublic"];
/** The body of a create (`completed` and `priority` have defaults). */
export type TaskCreate = Optional<Schemas["TaskCreate"], "completed" | "priority">;
/** The body of PUT and PATCH: the fields sent change, the others stay. */
export type TaskPatch = Schemas["TaskPatch"];
/** The body of `/complete`: `{completed}` or `{status}` sets completion, `{}` flips it. */
export type TaskCompletion = Schemas["TaskCompletion"];
export type TaskStats = Schemas["TaskStats"];
/** One page of the changes feed. */
export type ChangesPage = Schemas["ChangesPage"];
/** An account of the service's own (`/auth/*`). */
export type User = Schemas["UserPublic"];
export type UserRegister = Schemas["UserRegister"];
export type TokenResponse = Schemas["TokenResponse"];
/** One entry of a 422's `detail` list. */
export type ValidationError = Schemas["ValidationError"];
export type Priority = Task["priority"];
/** The spellings a status filter accepts (any case). */
export type StatusFilter = "all" | "pending" | "todo" | "completed" | "complete" | "done";

/** What `getToken` may return: a bearer token, or nothing (the call is then sent without one). */
export type TokenValue = string | null | undefined;

/** Retry of idempotent calls on 503 and 429 (off unless given). */
export interface RetryOptions {
  /** Tries in all, the first included (2 = one retry). */
  attempts: number;
  /** The longest wait between two tries, whatever `Retry-After` says (default 10 000). */
  maxDelayMs?: number | undefined;
}

export interface ApiClientOptions {
  /** Where the service is, e.g. `http://127.0.0.1:8000` (a path prefix is kept). */
  baseUrl: string;
  /** Called before every call that needs a token; Better Auth:
   * `async () => (await authClient.token()).data?.token`. */
  getToken?: (() => TokenValue | Promise<TokenValue>) | undefined;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch | undefined;
  /** Opt-in retry of idempotent calls on 503 and 429, honouring `Retry-After`. */
  retry?: RetryOptions | undefined;
}

/** Options every call takes. */
export interface CallOptions {
  signal?: AbortSignal | undefined;
  /** Extra request headers. */
  headers?: Record<string, string> | undefined;
  /** Use this bearer token instead of asking `getToken`. */
  token?: string | undefined;
}

/** Writes to one task may be made conditional on its ETag. */
export interface WriteOptions extends CallOptions {
  /** The ETag the change is based on (`"id.version"`, or `*`); a stale one is a 412 ApiError. */
  ifMatch?: string | undefined;
}

export interface CreateOptions extends CallOptions {
  /** Makes the create safe to retry: the same key and body answer the first task again. */
  idempotencyKey?: string | undefined;
}

export interface GetOptions extends CallOptions {
  /** The ETag you hold: answered `{ notModified: true }` (304) while it still matches. */
  ifNoneMatch?: string | undefined;
}

/** The filters, order and page of a task list (see the README's list parameters). */
export interface ListTasksQuery {
  status?: StatusFilter | undefined;
  completed?: boolean | undefined;
  /** Text in the title or description, ignoring case. */
  q?: string | undefined;
  /** Any of these priorities. */
  priority?: Priority | Priority[] | undefined;
  due_before?: string | Date | undefined;
  due_after?: string | Date | undefined;
  overdue?: boolean | undefined;
  has_due_date?: boolean | undefined;
  updated_since?: string | Date | undefined;
  /** Tasks with all of these tags (ignoring case). */
  tag?: string | string[] | undefined;
  /** `created_at`, `updated_at`, `title`, `due_date` or `priority`; `-` prefix = descending. */
  sort?: string | undefined;
  order?: "asc" | "desc" | undefined;
  /** 1 to 500 (default 100). */
  limit?: number | undefined;
  offset?: number | undefined;
}

/** The `Link` header of a list, by relation. */
export interface PageLinks {
  next?: string;
  prev?: string;
  first?: string;
  last?: string;
}

/** One page of tasks. */
export interface TaskPage {
  tasks: Task[];
  /** Tasks matching the filter across all pages (`X-Total-Count`). */
  total: number;
  links: PageLinks;
}

/** What `getTask` answers: the task and its ETag, or a 304 when `ifNoneMatch` still matches. */
export type GetTaskResult =
  | { notModified: false; task: Task; etag: string }
  | { notModified: true; etag: string };

/** What `deleteTasks` answers: how many went. */
export type Deleted = Schemas["Deleted"];

/** The changes feed's query: the previous `cursor`, and changes per page (1 to 500). */
export interface ChangesQuery {
  since?: string | undefined;
  limit?: number | undefined;
}

/** Which tasks `deleteTasks` removes. */
export type DeleteFilter = { status: Exclude<StatusFilter, "all"> } | { completed: boolean };

/** Thrown for every answer that is not a success. (A network failure or an abort rejects with
 * fetch's own error.) */
export class ApiError extends Error {
  override readonly name = "ApiError";
  /** The HTTP status. */
  readonly status: number;
  /** The body's `detail`: a message, or for a 422 the list of validation errors. */
  readonly detail: string | ValidationError[] | undefined;
  /** The parsed body (JSON, else text, else undefined). */
  readonly body: unknown;
  readonly headers: Headers;
  /** Seconds to wait, from `Retry-After` (seconds or an HTTP date). */
  readonly retryAfter: number | undefined;
  /** On 412 (If-Match) and 409 (body `version`): the task as it is now. */
  readonly task: Task | undefined;
  readonly method: string;
  readonly url: string;

  constructor(init: { status: number; body: unknown; headers: Headers; method: string; url: string }) {
    const { status, body, headers } = init;
    const record = isRecord(body) ? body : {};
    const detail = typeof record.detail === "string" || Array.isArray(record.detail)
      ? (record.detail as string | ValidationError[])
      : undefined;
    const task = (status === 409 || status === 412) && isTask(body) ? body : undefined;
    super(errorMessage(status, record.message, detail, task, body));
    this.status = status;
    this.detail = detail;
    this.body = body;
    this.headers = headers;
    this.retryAfter = retryAfterSeconds(headers.get("Retry-After"));
    this.task = task;
    this.method = init.method;
    this.url = init.url;
  }

  /** The ETag of `task` (the current version), for a retry of the edit. */
  get etag(): string | undefined {
    return this.headers.get("ETag") ?? (this.task && etagOf(this.task));
  }
}

/** Whether `error` is an {@link ApiError}, optionally of one of `statuses`. */
export function isApiError(error: unknown, ...statuses: number[]): error is ApiError {
  return error instanceof ApiError && (statuses.length === 0 || statuses.includes(error.status));
}

/** The ETag the service gives a task: `"id.version"`. */
export function etagOf(task: Pick<Task, "id" | "version">): string {
  return `"${task.id}.${task.version}"`;
}

/** Parses a `Link` header into its next, prev, first and last URLs. */
export function parseLinks(header: string | null): PageLinks {
  const links: PageLinks = {};
  if (!header) return links;
  const entry = /<([^>]*)>((?:\s*;\s*[^;,]+)*)/g;
  for (let match = entry.exec(header); match !== null; match = entry.exec(header)) {
    const rel = /;\s*rel\s*=\s*"?([^";]+)"?/i.exec(match[2] ?? "")?.[1];
    for (const name of rel?.toLowerCase().split(/\s+/) ?? []) {
      if (name === "next" || name === "prev" || name === "first" || name === "last") {
        links[name] = match[1] ?? "";
      }
    }
  }
  return links;
}

/** Seconds from a `Retry-After` value (delta-seconds or an HTTP date); undefined if unusable. */
export function retryAfterSeconds(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - Date.now()) / 1000);
}

/** The client: one function per route of the service. */
export type ApiClient = ReturnType<typeof createApiClient>;

/** Creates a client for the service at `baseUrl`. */
export function createApiClient(options: ApiClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const fetchImpl: typeof fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const retry = options.retry;

  interface Call extends CallOptions {
    method: string;
    /** A path below `baseUrl` with its query, e.g. `/api/alice/tasks?limit=5`. */
    path: string;
    body?: unknown;
    /** Send a token (from `getToken`, unless `token` is given). */
    auth?: boolean;
    /** May be retried (idempotent). */
    idempotent?: boolean;
    /** Statuses that are answers rather than errors (beyond 2xx). */
    accept?: number[];
  }

  async function send(call: Call): Promise<Response> {
    const headers = new Headers({ Accept: "application/json", ...call.headers });
    if (call.body !== undefined) headers.set("Content-Type", "application/json");
    if (call.auth !== false) {
      const token = call.token ?? (await options.getToken?.());
      if (token) headers.set("Authorization", `Bearer ${token}`);
    }
    const url = baseUrl + call.path;
    const init: RequestInit = {
      method: call.method,
      headers,
      body: call.body === undefined ? null : JSON.stringify(call.body),
      signal: call.signal ?? null,
    };
    const attempts = retry && call.idempotent ? Math.max(1, Math.floor(retry.attempts)) : 1;
    for (let attempt = 1; ; attempt++) {
      const response = await fetchImpl(url, init);
      if (response.ok || call.accept?.includes(response.status)) return response;
      if (attempt < attempts && (response.status === 503 || response.status === 429)) {
        await response.body?.cancel().catch(() => undefined);
        await sleep(retryDelayMs(response, attempt, retry?.maxDelayMs ?? 10_000), call.signal);
        continue;
      }
      throw new ApiError({
        status: response.status,
        body: await readBody(response),
        headers: response.headers,
        method: call.method,
        url,
      });
    }
  }

  async function json<T>(call: Call): Promise<T> {
    const response = await send(call);
    return (await readBody(response)) as T;
  }

  const tasksPath = (userId: string, suffix = "") => `/api/${encodeURIComponent(userId)}/tasks${suffix}`;
  const taskPath = (userId: string, id: number, suffix = "") => tasksPath(userId, `/${id}${suffix}`);

  /** A call's own options, plus the request headers `more` that have a value. */
  function using(opts: CallOptions, more: Record<string, string | undefined> = {}) {
    return { headers: headersOf(opts.headers, more), signal: opts.signal, token: opts.token };
  }

  async function taskPage(path: string, opts: CallOptions): Promise<TaskPage> {
    const response = await send({ ...using(opts), method: "GET", path, idempotent: true });
    return {
      tasks: (await readBody(response)) as Task[],
      total: Number(response.headers.get("X-Total-Count") ?? Number.NaN),
      links: parseLinks(response.headers.get("Link")),
    };
  }

  function deleteTasks(userId: string, filter: DeleteFilter, opts: CallOptions = {}): Promise<Deleted> {
    const path = tasksPath(userId, queryString(filter));
    return json({ ...using(opts), method: "DELETE", path, idempotent: true });
  }

  return {
    /** Lists a user's tasks: one page, the total across pages and the `Link` URLs. */
    listTasks(userId: string, query: ListTasksQuery = {}, opts: CallOptions = {}): Promise<TaskPage> {
      return taskPage(tasksPath(userId, queryString(query)), opts);
    },

    /** Fetches the page a `Link` URL of a previous list names (`page.links.next`...), below
     * `baseUrl` (only its path and query are used). */
    listTasksAt(link: string, opts: CallOptions = {}): Promise<TaskPage> {
      const url = new URL(link, baseUrl + "/");
      return taskPage(url.pathname + url.search, opts);
    },

    /** Creates a task (201). With `idempotencyKey` a retry answers the first task again. */
    createTask(userId: string, task: TaskCreate, opts: CreateOptions = {}): Promise<Task> {
      const key = opts.idempotencyKey;
      return json({
        ...using(opts, { "Idempotency-Key": key }),
        method: "POST",
        path: tasksPath(userId),
        body: task,
        idempotent: key !== undefined,
      });
    },

    /** Creates up to 100 tasks at once, all or none, in order. */
    createTasks(userId: string, tasks: TaskCreate[], opts: CallOptions = {}): Promise<Task[]> {
      return json({ ...using(opts), method: "POST", path: tasksPath(userId, "/bulk"), body: tasks });
    },

    /** Reads one task and its ETag; with `ifNoneMatch`, `{ notModified: true }` while unchanged. */
    async getTask(userId: string, id: number, opts: GetOptions = {}): Promise<GetTaskResult> {
      const response = await send({
        ...using(opts, { "If-None-Match": opts.ifNoneMatch }),
        method: "GET",
        path: taskPath(userId, id),
        idempotent: true,
        accept: [304],
      });
      if (response.status === 304) {
        return { notModified: true, etag: response.headers.get("ETag") ?? opts.ifNoneMatch ?? "" };
      }
      const task = (await readBody(response)) as Task;
      return { notModified: false, task, etag: response.headers.get("ETag") ?? etagOf(task) };
    },

    /** PUT: changes the fields sent (as PATCH does). A stale `ifMatch` is a 412 ApiError with `task`. */
    replaceTask(userId: string, id: number, task: TaskPatch, opts: WriteOptions = {}): Promise<Task> {
      return json({
        ...using(opts, { "If-Match": opts.ifMatch }),
        method: "PUT",
        path: taskPath(userId, id),
        body: task,
        idempotent: true,
      });
    },

    /** PATCH: changes the fields sent. A stale `ifMatch` is a 412 ApiError with `task`. */
    updateTask(userId: string, id: number, patch: TaskPatch, opts: WriteOptions = {}): Promise<Task> {
      return json({
        ...using(opts, { "If-Match": opts.ifMatch }),
        method: "PATCH",
        path: taskPath(userId, id),
        body: patch,
        idempotent: opts.ifMatch !== undefined,
      });
    },

    /** Deletes one task (204). */
    async deleteTask(userId: string, id: number, opts: WriteOptions = {}): Promise<void> {
      const path = taskPath(userId, id);
      await send({ ...using(opts, { "If-Match": opts.ifMatch }), method: "DELETE", path, idempotent: true });
    },

    /** Sets completion (`{ completed: true }` or a `status`) or, with no body or `{}`, flips it. */
    completeTask(userId: string, id: number, body?: TaskCompletion, opts: WriteOptions = {}): Promise<Task> {
      const sets = body?.completed !== undefined || body?.status != null;
      return json({
        ...using(opts, { "If-Match": opts.ifMatch }),
        method: "PATCH",
        path: taskPath(userId, id, "/complete"),
        body,
        idempotent: sets || opts.ifMatch !== undefined,
      });
    },

    /** Flips completion (`/toggle`). */
    toggleTask(userId: string, id: number, opts: WriteOptions = {}): Promise<Task> {
      return json({
        ...using(opts, { "If-Match": opts.ifMatch }),
        method: "PATCH",
        path: taskPath(userId, id, "/toggle"),
        idempotent: opts.ifMatch !== undefined,
      });
    },

    /** Deletes the tasks a status filter matches: `{ status: "completed" }` or `{ completed: true }`. */
    deleteTasks,

    /** Clears the completed tasks. */
    deleteCompletedTasks(userId: string, opts: CallOptions = {}): Promise<Deleted> {
      return deleteTasks(userId, { status: "completed" }, opts);
    },

    /** Counts: total, completed, pending, overdue, due today (today in `tz`, default UTC). */
    getStats(userId: string, query: { tz?: string } = {}, opts: CallOptions = {}): Promise<TaskStats> {
      const path = tasksPath(userId, "/stats" + queryString(query));
      return json({ ...using(opts), method: "GET", path, idempotent: true });
    },

    /** The changes feed: everything (no `since`), or what changed since a cursor. A cursor
     * older than the deletions kept is a 410 ApiError: sync again without `since`. */
    getChanges(userId: string, query: ChangesQuery = {}, opts: CallOptions = {}): Promise<ChangesPage> {
      const path = tasksPath(userId, "/changes" + queryString(query));
      return json({ ...using(opts), method: "GET", path, idempotent: true });
    },

    /** Creates an account of the service's own (201; 409 if the email is taken). */
    register(account: UserRegister, opts: CallOptions = {}): Promise<User> {
      return json({ ...using(opts), method: "POST", path: "/auth/register", body: account, auth: false });
    },

    /** Logs in: `access_token` is a bearer token whose subject is `user.id`. */
    login(credentials: { email: string; password: string }, opts: CallOptions = {}): Promise<TokenResponse> {
      return json({ ...using(opts), method: "POST", path: "/auth/login", body: credentials, auth: false });
    },

    /** The account of the token's subject (404 if it has none here). */
    me(opts: CallOptions = {}): Promise<User> {
      return json({ ...using(opts), method: "GET", path: "/auth/me", idempotent: true });
    },

    /** Revokes the token (204). */
    async logout(opts: CallOptions = {}): Promise<void> {
      await send({ ...using(opts), method: "POST", path: "/auth/logout" });
    },

    /** Liveness: `{ status: "ok" }`. */
    health(opts: CallOptions = {}): Promise<Record<string, string>> {
      return json({ ...using(opts), method: "GET", path: "/health", auth: false, idempotent: true });
    },

    /** Readiness: `{ status: "ok", database: "ok" }`, or a 503 ApiError. */
    ready(opts: CallOptions = {}): Promise<Record<string, string>> {
      return json({ ...using(opts), method: "GET", path: "/health/ready", auth: false, idempotent: true });
    },
  };
}

/** `?a=1&b=x&b=y` from an object: arrays repeat, dates in ISO 8601, undefined and null skipped. */
function queryString(query: object): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item === undefined || item === null) continue;
      params.append(name, item instanceof Date ? item.toISOString() : String(item));
    }
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

/** `base` plus the entries of `more` that have a value. */
function headersOf(
  base: Record<string, string> | undefined,
  more: Record<string, string | undefined>,
): Record<string, string> {
  const headers = { ...base };
  for (const [name, value] of Object.entries(more)) if (value !== undefined) headers[name] = value;
  return headers;
}

/** JSON if the response says so, else text, else undefined (204, 304, empty). */
async function readBody(response: Response): Promise<unknown> {
  const text = await response.text();
  if (text === "") return undefined;
  if (/\bjson\b/i.test(response.headers.get("Content-Type") ?? "")) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** The wait before try `attempt + 1`: `Retry-After`, else 0.5 s doubling; at most `maxMs`. */
function retryDelayMs(response: Response, attempt: number, maxMs: number): number {
  const seconds = retryAfterSeconds(response.headers.get("Retry-After"));
  const wanted = seconds === undefined ? 500 * 2 ** (attempt - 1) : seconds * 1000;
  return Math.min(Math.max(0, wanted), maxMs);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    const abort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", abort, { once: true });
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isTask(value: unknown): value is Task {
  return isRecord(value) && typeof value.id === "number" && typeof value.version === "number";
}

/** The human line of an error: the body's `message`, else its `detail`, else the status. */
function errorMessage(
  status: number,
  message: unknown,
  detail: ApiError["detail"],
  task: Task | undefined,
  body: unknown,
): string {
  if (typeof message === "string" && message) return message;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length > 0) {
    return detail.map((e) => `${e.loc.filter((part) => part !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  if (task) return `The task has changed (now version ${task.version}): ${status}`;
  if (typeof body === "string" && body.trim()) return `${status}: ${body.trim().slice(0, 200)}`;
  return `Request failed with status ${status}`;
}
