// Drives Debian's headless Chromium with playwright-core (from tests/node/node_modules, never a
// browser download): opens a test page, calls one of the functions it defines with a JSON
// argument, and prints one JSON line per record:
//   what the page reports through window.report(record)       (its own "type")
//   {"type": "http", "url", "status", "lastEventId"}           responses from other origins,
//                                                              access_token redacted
//   {"type": "console", "level", "text"} / {"type": "pageerror", "message"}
//   {"type": "requestfailed", "url", "failure"}
//   {"type": "done", "result"} | {"type": "failed", "error"} | {"type": "deadline"}
//   {"type": "called", "result"}, {"type": "reloaded"}            with --then-call: the first
//                                                              call's result, then the reload
// Every line carries "seq", its position in the output. Exit code: 0 done, 1 failed,
// 2 deadline, 64 usage. On SIGTERM the browser is closed and the script exits (143).
//
// node driver.mjs --node-dir tests/node --chromium /usr/bin/chromium --url http://127.0.0.1:P/
//     --call runSse --argument '{"...": ...}' [--deadline-ms 30000]
//     [--then-call NAME --then-argument JSON]   reload the page, then call NAME(JSON) as well

import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
    options: {
        "node-dir": { type: "string" },
        chromium: { type: "string", default: "/usr/bin/chromium" },
        url: { type: "string" },
        call: { type: "string" },
        argument: { type: "string", default: "{}" },
        "deadline-ms": { type: "string", default: "30000" },
        "then-call": { type: "string" },
        "then-argument": { type: "string", default: "{}" },
    },
});
if (!values["node-dir"] || !values.url || !values.call) {
    process.stderr.write("usage: node driver.mjs --node-dir DIR --url URL --call FUNCTION\n");
    process.exit(64);
}

// playwright-core is installed (pinned, `npm ci`) next to the CometD packages in tests/node.
const require = createRequire(join(resolve(values["node-dir"]), "package.json"));
const { chromium } = require("playwright-core");

const ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

let seq = 0;
function emit(record) {
    process.stdout.write(JSON.stringify({ ...record, seq: seq++ }) + "\n");
}

function redact(url) {
    const parsed = new URL(url);
    if (parsed.searchParams.has("access_token")) {
        parsed.searchParams.set("access_token", "REDACTED");
    }
    return parsed.toString();
}

const userDataDir = await mkdtemp(join(tmpdir(), "replaybus-chromium-"));
let context = null;
let exiting = false;

async function exit(code) {
    if (exiting) {
        return;
    }
    exiting = true;
    clearTimeout(deadline);
    try {
        if (context !== null) {
            await context.close();
        }
    } catch (error) {
        process.stderr.write(`closing the browser: ${error}\n`);
    }
    await rm(userDataDir, { recursive: true, force: true });
    process.stdout.write("", () => process.exit(code));
}

process.on("SIGTERM", () => void exit(143));
const deadline = setTimeout(() => {
    emit({ type: "deadline" });
    void exit(2);
}, parseInt(values["deadline-ms"], 10));

try {
    context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: values.chromium,
        headless: true,
        args: ARGS,
        handleSIGINT: false,
        handleSIGTERM: false,
        handleSIGHUP: false,
    });
    const page = context.pages()[0] ?? await context.newPage();
    const origin = new URL(values.url).origin;
    await page.exposeFunction("report", (record) => emit(record));
    page.on("console", (message) => emit({ type: "console", level: message.type(),
        text: message.text() }));
    page.on("pageerror", (error) => emit({ type: "pageerror", message: String(error) }));
    page.on("requestfailed", (request) => {
        if (new URL(request.url()).origin !== origin) {
            emit({ type: "requestfailed", url: redact(request.url()),
                failure: request.failure()?.errorText ?? null });
        }
    });
    page.on("response", async (response) => {
        if (new URL(response.url()).origin === origin) {
            return;
        }
        const request = response.request();
        let lastEventId = null;
        try {
            lastEventId = (await request.allHeaders())["last-event-id"] ?? null;
        } catch {
            // the page is closing
        }
        emit({ type: "http", method: request.method(), url: redact(response.url()),
            status: response.status(), lastEventId });
    });
    await page.goto(values.url, { waitUntil: "load" });
    let result = await page.evaluate(
        ([name, argument]) => window[name](argument),
        [values.call, JSON.parse(values.argument)],
    );
    if (values["then-call"]) {
        emit({ type: "called", result: result ?? null });
        await page.reload({ waitUntil: "load" });
        emit({ type: "reloaded" });
        result = await page.evaluate(
            ([name, argument]) => window[name](argument),
            [values["then-call"], JSON.parse(values["then-argument"])],
        );
    }
    emit({ type: "done", result: result ?? null });
    await exit(0);
} catch (error) {
    if (!exiting) {
        emit({ type: "failed", error: String(error && error.stack || error) });
        await exit(1);
    }
}
