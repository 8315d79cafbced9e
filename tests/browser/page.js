// The test page: served by the test's own static server (another origin than the replaybus
// server), it imports the product files from /clients/js/ and the official CometD client from
// /vendor/cometd/, and reports everything it receives through window.report(record), which
// tests/browser/driver.mjs exposes and prints. Tokens come from the static server's
// /token/<name> (the page's "backend"), so every (re)connect can get a fresh one.

import { subscribe } from "/clients/js/replaybus.js";
import { ReplayExtension } from "/clients/js/cometd-replay.js";
import { CometD } from "/vendor/cometd/cometd.js";

function report(record) {
    return window.report(record);
}

async function token(name) {
    const response = await fetch(`/token/${encodeURIComponent(name)}`, { cache: "no-store" });
    if (!response.ok) {
        throw new Error(`/token/${name} answered ${response.status}`);
    }
    return response.text();
}

async function barrier(name) {
    const response = await fetch(`/barrier/${encodeURIComponent(name)}`, { cache: "no-store" });
    if (!response.ok) {
        throw new Error(`/barrier/${name} answered ${response.status}`);
    }
}

/**
 * One subscription with the replaybus helper, until it received `until.events` events and
 * `until.gaps` gaps; then it is closed and its lastEventId reported.
 */
function runSubscription(baseUrl, { name, channel, from, until }) {
    return new Promise((resolve) => {
        let events = 0;
        let gaps = 0;
        let subscription = null;
        let finished = false;
        const check = () => {
            if (!finished && events >= (until.events ?? 0) && gaps >= (until.gaps ?? 0)) {
                finished = true;
                // Deliveries are dispatched asynchronously: `subscription` is set by now.
                subscription.close();
                report({ type: "closed", sub: name, lastEventId: subscription.lastEventId });
                resolve();
            }
        };
        subscription = subscribe(baseUrl, channel, {
            from,
            token: () => token(name),
            minDelay: 200,
            maxDelay: 2000,
            onOpen(info) {
                report({ type: "open", sub: name, ...info });
            },
            onEvent(envelope, message) {
                events += 1;
                report({ type: "event", sub: name, id: message.lastEventId, envelope });
                check();
            },
            onGap(gap) {
                gaps += 1;
                report({ type: "gap", sub: name, gap });
                check();
            },
            onError(error) {
                report({ type: "error", sub: name, phase: error.phase, message: error.message,
                    retryIn: error.retryIn });
            },
        });
    });
}

/**
 * One helper subscription with its position kept in localStorage, until it processed
 * `count` events. It is left open: the page is reloaded (or closed) under it.
 */
window.runCheckpointed = ({ baseUrl, name, channel, from, count, holdLast = false }) =>
    new Promise((resolve) => {
    let events = 0;
    subscribe(baseUrl, channel, {
        from,
        checkpoint: true,
        token: () => token(name),
        onOpen(info) {
            report({ type: "open", sub: name, ...info });
        },
        onEvent(envelope, message) {
            events += 1;
            report({ type: "event", sub: name, id: message.lastEventId, envelope });
            if (events === count) {
                resolve("processed");
                if (holdLast) {
                    return new Promise(() => {}); // still being processed at the reload
                }
            }
            return undefined;
        },
        onGap(gap) {
            report({ type: "gap", sub: name, gap });
        },
        onError(error) {
            report({ type: "error", sub: name, phase: error.phase, message: error.message,
                retryIn: error.retryIn });
        },
    });
});

/** Several helper subscriptions at once; resolves when each reached its `until`. */
window.runSse = async ({ baseUrl, subscriptions }) => {
    await Promise.all(subscriptions.map((spec) => runSubscription(baseUrl, spec)));
    return "all subscriptions done";
};

function describeMeta(message) {
    const described = {};
    for (const key of ["channel", "successful", "error", "subscription", "clientId", "advice",
        "ext"]) {
        if (message[key] !== undefined) {
            described[key] = message[key];
        }
    }
    if (message.failure) {
        described.failure = {
            reason: message.failure.reason === undefined ? null : String(message.failure.reason),
            httpCode: message.failure.httpCode === undefined ? null : message.failure.httpCode,
        };
    }
    return described;
}

/**
 * One CometD client (long-polling, as Salesforce's samples configure it) with the replay
 * extension: handshake with a bearer token, subscribe from `replay`, take `count` events,
 * disconnect.
 */
async function cometdPhase(baseUrl, channel, { name, replay, count, waitFor }) {
    if (waitFor) {
        await barrier(waitFor);
    }
    const accessToken = await token(name);
    const cometd = new CometD(name);
    cometd.unregisterTransport("websocket");
    cometd.configure({
        url: `${baseUrl}/cometd/58.0`,
        requestHeaders: { Authorization: `Bearer ${accessToken}` },
        logLevel: "warn",
    });
    const extension = new ReplayExtension({ channel, replay });
    cometd.registerExtension("replay", extension);
    await new Promise((resolve, reject) => {
        let received = 0;
        cometd.addListener("/meta/handshake", (message) => {
            report({ type: "cometd-meta", phase: name, kind: "handshake",
                message: describeMeta(message) });
            if (!message.successful) {
                cometd.disconnect();
                reject(new Error(`${name}: the handshake failed: ${JSON.stringify(
                    describeMeta(message))}`));
                return;
            }
            cometd.subscribe(channel, (event) => {
                received += 1;
                report({ type: "cometd-event", phase: name, message: event,
                    replay: extension.replay });
                if (received === count) {
                    cometd.disconnect((reply) => {
                        report({ type: "cometd-done", phase: name, replay: extension.replay,
                            disconnect: describeMeta(reply) });
                        resolve();
                    });
                }
            }, (reply) => {
                report({ type: "cometd-meta", phase: name, kind: "subscribe",
                    message: describeMeta(reply) });
                if (!reply.successful) {
                    cometd.disconnect();
                    reject(new Error(`${name}: the subscribe failed: ${reply.error}`));
                }
            });
        });
        cometd.handshake();
    });
}

/** CometD phases one after the other (a phase may first wait for a barrier). */
window.runCometd = async ({ baseUrl, channel, phases }) => {
    for (const phase of phases) {
        await cometdPhase(baseUrl, channel, phase);
    }
    return "all phases done";
};
