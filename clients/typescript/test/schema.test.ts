/**
 * The committed types are what openapi-typescript makes of the committed openapi.json (whose
 * own freshness against the service tests/test_client_types.py checks, in `make test`).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { it } from "node:test";
import { promisify } from "node:util";

/** clients/typescript (this file runs as build/test/schema.test.js). */
const PACKAGE = fileURLToPath(new URL("../../", import.meta.url));

it("src/schema.ts is up to date with openapi.json (else: make types)", async () => {
  const require = createRequire(join(PACKAGE, "package.json"));
  const cli = join(require.resolve("openapi-typescript/package.json"), "..", "bin", "cli.js");
  const workdir = mkdtempSync(join(tmpdir(), "todo-schema-"));
  try {
    const output = join(workdir, "schema.ts");
    await promisify(execFile)(process.execPath, [cli, "openapi.json", "-o", output], { cwd: PACKAGE });
    const fresh = readFileSync(output, "utf8");
    const committed = readFileSync(join(PACKAGE, "src", "schema.ts"), "utf8");
    assert.ok(
      fresh === committed,
      "src/schema.ts differs from what openapi-typescript generates from openapi.json: run `make types`",
    );
  } finally {
    rmSync(workdir, { recursive: true, force: true });
  }
});
