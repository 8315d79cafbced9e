// Many CometD JavaScript clients in one process, all subscribed to one channel with -1.
// Prints JSON lines:
//   {"type": "ready", "clients": n}            every client has handshaken and subscribed
//   {"type": "meta", "client": i, "kind", "message"}  a failed handshake, subscribe or connect
//   {"type": "client", "client": i, "received": n, "ordered": bool, "digest": sha256,
//    "first": id, "last": id, "extra": n}      one per client at the end
//   {"type": "done", "reason": "count" | "deadline" | "failure", "seconds": s}
// `digest` is the SHA-256 of the received ReplayIds written as "id1,id2,...,idN,", so a client
// that received every event exactly once, in order, has the digest of the published sequence.
// `ordered` is false if any ReplayId was not greater than the one before it; `extra` counts
// events a client received after its `--count`. Every client disconnects at the end.
// Exits 0 when every client has its count, 2 at the deadline, 5 on a failure.
//
// BAYEUX_TOKEN=... node soak.mjs --url=http://127.0.0.1:PORT --channel=/event/X__e
//     --clients=200 --count=2000 [--version=58.0] [--deadline-ms=45000]

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { describe, startClient, stopClient } from "./client.mjs";

const { values } = parseArgs({
    options: {
        url: { type: "string" },
        channel: { type: "string" },
        clients: { type: "string", default: "200" },
        count: { type: "string", default: "2000" },
        version: { type: "string", default: "58.0" },
        "deadline-ms": { type: "string", default: "45000" },
    },
});
const token = process.env.BAYEUX_TOKEN;
if (!values.url || !values.channel || token === undefined) {
    process.stderr.write("usage: BAYEUX_TOKEN=... node soak.mjs --url=URL --channel=CHANNEL\n");
    process.exit(64);
}
const total = parseInt(values.clients, 10);
const count = parseInt(values.count, 10);
const started = Date.now();

function emit(record) {
    process.stdout.write(JSON.stringify(record) + "\n");
}

const states = [];
let subscribed = 0;
let complete = 0;
let finished = false;

function finish(reason, code) {
    if (finished) {
        return;
    }
    finished = true;
    clearTimeout(deadline);
    let pending = states.length;
    const report = () => {
        for (const state of states) {
            emit({
                type: "client",
                client: state.index,
                received: state.received,
                ordered: state.ordered,
                digest: state.hash.digest("hex"),
                first: state.first,
                last: state.last,
                extra: state.extra,
            });
        }
        emit({ type: "done", reason, seconds: (Date.now() - started) / 1000 });
        process.stdout.write("", () => process.exit(code));
    };
    for (const state of states) {
        stopClient(state.client.cometd, (reply) => {
            if (reply !== null && !reply.successful) {
                emit({
                    type: "meta",
                    client: state.index,
                    kind: "disconnect",
                    message: describe(reply),
                    seconds: (Date.now() - started) / 1000,
                    received: state.received,
                    finishing: true,
                });
            }
            pending -= 1;
            if (pending === 0) {
                report();
            }
        });
    }
}

const deadline = setTimeout(() => finish("deadline", 2), parseInt(values["deadline-ms"], 10));

for (let index = 0; index < total; index += 1) {
    const state = {
        index,
        received: 0,
        extra: 0,
        ordered: true,
        first: null,
        last: null,
        hash: createHash("sha256"),
        client: null,
    };
    states.push(state);
    state.client = startClient({
        url: `${values.url}/cometd/${values.version}`,
        token,
        scheme: "OAuth",
        channel: values.channel,
        replay: "-1",
        websocket: false,
        name: `soak-${index}`,
    }, {
        onMeta(kind, message) {
            if (message.successful) {
                if (kind === "subscribe") {
                    subscribed += 1;
                    if (subscribed === total) {
                        emit({ type: "ready", clients: total });
                    }
                }
                return;
            }
            emit({
                type: "meta",
                client: index,
                kind,
                message: describe(message),
                seconds: (Date.now() - started) / 1000,
                received: state.received,
                finishing: finished,
            });
            setTimeout(() => finish("failure", 5), 0);
        },
        onEvent(message) {
            if (state.received >= count) {
                state.extra += 1;
                return;
            }
            const replayId = message.data.event.replayId;
            if (state.last !== null && replayId <= state.last) {
                state.ordered = false;
            }
            if (state.first === null) {
                state.first = replayId;
            }
            state.last = replayId;
            state.hash.update(`${replayId},`);
            state.received += 1;
            if (state.received === count) {
                complete += 1;
                if (complete === total) {
                    finish("count", 0);
                }
            }
        },
    });
}
