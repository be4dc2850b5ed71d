/**
 * The service as `make run` starts it, for the journey test: on a free port of 127.0.0.1, on a
 * fresh SQLite file in a temporary folder, in a process group of its own (as testkit/server.py
 * does in Python).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (this file runs as build/test/server.js in clients/typescript). */
export const REPOSITORY = fileURLToPath(new URL("../../../../", import.meta.url));
const READY_MS = 60_000;
const STOP_MS = 5_000;

export interface RunningService {
  url: string;
  /** BETTER_AUTH_SECRET of this run. */
  secret: string;
  /** What make and uvicorn printed so far. */
  log(): string;
  /** SIGTERM to the whole group, SIGKILL if it lingers. */
  stop(): Promise<void>;
}

/** A port nobody listens on now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

/** Starts `make run` and waits (up to 60 s) until GET /health answers 200. */
export async function startService(): Promise<RunningService> {
  const workdir = mkdtempSync(join(tmpdir(), "todo-client-"));
  const port = await freePort();
  const secret = randomBytes(48).toString("base64url");
  const logPath = join(workdir, "server.log");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: `sqlite:///${join(workdir, "todo.db")}`,
    ENVIRONMENT: "test",
    BETTER_AUTH_SECRET: secret,
    DEV_SECRET_FILE: join(workdir, ".dev-secret"),
    RATE_LIMIT_AUTH_PER_ADDRESS: "100000/minute",
    RATE_LIMIT_UNAUTHENTICATED_PER_ADDRESS: "100000/minute",
    PASSWORD_HASH_TIME_COST: "1",
    PASSWORD_HASH_MEMORY_KIB: "1024",
  };
  for (const name of ["MAKEFLAGS", "MFLAGS", "MAKELEVEL"]) delete env[name]; // a make above must not steer this one

  const output = openSync(logPath, "w");
  const child: ChildProcess = spawn(
    "make",
    ["--no-print-directory", "run", "HOST=127.0.0.1", `PORT=${port}`],
    { cwd: REPOSITORY, env, detached: true, stdio: ["ignore", output, output] },
  );
  closeSync(output);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  void exit.then(() => (exited = true));
  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };

  async function stop(): Promise<void> {
    const group = child.pid;
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      if (group === undefined || !signalGroup(group, signal)) break;
      // make may exit before uvicorn: wait until no process of the group is left.
      const deadline = Date.now() + STOP_MS;
      while (signalGroup(group, 0) && Date.now() < deadline) await delay(50);
      if (!signalGroup(group, 0)) break;
    }
    await Promise.race([exit, delay(STOP_MS)]);
    rmSync(workdir, { recursive: true, force: true });
  }

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + READY_MS;
  try {
    for (;;) {
      if (exited) throw new Error(`make run exited early:\n${log().slice(-3000)}`);
      if (await answers(url)) return { url, secret, log, stop };
      if (Date.now() > deadline) throw new Error(`make run not answering within 60 s:\n${log().slice(-3000)}`);
      await delay(200);
    }
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Sends `signal` to process group `group` (0: only checks it exists); false if it is gone. */
function signalGroup(group: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-group, signal);
    return true;
  } catch {
    return false;
  }
}

async function answers(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
