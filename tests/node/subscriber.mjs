// One CometD JavaScript client subscribing to one channel; prints one JSON line per record:
//   {"type": "meta", "kind": "handshake" | "subscribe" | "connect" | "disconnect", "message": {...}}
//   {"type": "event", "message": <the delivered message as the client got it>}
//   {"type": "done", "reason": "count" | "deadline" | "handshake-denied" | "subscribe-failed",
//    "received": n, "replay": <the replay extension's last ReplayId>}
// and exits: 0 after `--count` events, 2 at the deadline, 3 when the handshake is denied,
// 4 when the subscribe fails. Events that arrive after the count are not printed.
//
// With `--fallback R`, a subscribe refused with a `400::` error is made again once with replay
// R (what aiosfstream's `replay_fallback` does). With `--rehandshake`, a `/meta/connect` that
// fails with `advice.reconnect: "none"` (CometD then stops) is followed by a new handshake, as
// applications do after `401::Authentication invalid`; the `/meta/handshake` listener then
// subscribes from the replay extension's last ReplayId.
//
// node subscriber.mjs --url http://127.0.0.1:PORT --channel /event/X__e --replay -2 --count 5
//     [--version 58.0] [--scheme OAuth] [--deadline-ms 20000] [--websocket]
//     [--fallback -2] [--rehandshake]
// The token comes from the BAYEUX_TOKEN environment variable.

import { parseArgs } from "node:util";
import { describe, startClient, stopClient } from "./client.mjs";

const { values } = parseArgs({
    options: {
        url: { type: "string" },
        channel: { type: "string" },
        replay: { type: "string", default: "-1" },
        count: { type: "string", default: "1" },
        version: { type: "string", default: "58.0" },
        scheme: { type: "string", default: "OAuth" },
        "deadline-ms": { type: "string", default: "20000" },
        websocket: { type: "boolean", default: false },
        fallback: { type: "string" },
        rehandshake: { type: "boolean", default: false },
    },
});
const token = process.env.BAYEUX_TOKEN;
if (!values.url || !values.channel || token === undefined) {
    process.stderr.write("usage: BAYEUX_TOKEN=... node subscriber.mjs --url URL --channel CHANNEL\n");
    process.exit(64);
}
const count = parseInt(values.count, 10);

function emit(record) {
    process.stdout.write(JSON.stringify(record) + "\n");
}

let received = 0;
let finished = false;
let client = null;
let fellBack = false;

function finish(reason, code) {
    if (finished) {
        return;
    }
    finished = true;
    clearTimeout(deadline);
    stopClient(client.cometd, (reply) => {
        if (reply !== null) {
            emit({ type: "meta", kind: "disconnect", message: describe(reply) });
        }
        emit({ type: "done", reason, received, replay: client.replayExtension.replay });
        // Exit once stdout is flushed.
        process.stdout.write("", () => process.exit(code));
    });
}

const deadline = setTimeout(() => finish("deadline", 2), parseInt(values["deadline-ms"], 10));

const handlers = {
    onMeta(kind, message) {
        // A subscribe reply may come after events it let through (they travel on the other
        // HTTP connection, with the connect replies), so meta replies are printed even then.
        emit({ type: "meta", kind, message: describe(message) });
        if (finished) {
            return;
        }
        if (kind === "handshake" && !message.successful && message.advice
            && message.advice.reconnect === "none") {
            setTimeout(() => finish("handshake-denied", 3), 0);
        } else if (kind === "subscribe" && !message.successful) {
            if (values.fallback !== undefined && !fellBack
                && String(message.error).startsWith("400::")) {
                fellBack = true;
                client.replayExtension.setReplay(values.fallback);
                client.cometd.subscribe(values.channel, handlers.onEvent,
                    (reply) => handlers.onMeta("subscribe", reply));
            } else {
                setTimeout(() => finish("subscribe-failed", 4), 0);
            }
        } else if (kind === "connect" && values.rehandshake && message.advice
            && message.advice.reconnect === "none") {
            // CometD disconnects after such a reply; handshake once it has.
            setTimeout(() => client.cometd.handshake(), 0);
        }
    },
    onEvent(message) {
        if (finished) {
            return;
        }
        received += 1;
        emit({ type: "event", message });
        if (received >= count) {
            finish("count", 0);
        }
    },
};

client = startClient({
    url: `${values.url}/cometd/${values.version}`,
    token,
    scheme: values.scheme,
    channel: values.channel,
    replay: values.replay,
    websocket: values.websocket,
}, handlers);
