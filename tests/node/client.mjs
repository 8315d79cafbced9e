// One CometD JavaScript client set up the way Salesforce documents it: the token in an
// `Authorization` request header, the replay extension registered, and the subscription made
// from a `/meta/handshake` listener (CometD drops subscriptions on every re-handshake).

import { adapt } from "cometd-nodejs-client";
import { CometD } from "cometd";
import { ReplayExtension } from "./replay-extension.mjs";

// XMLHttpRequest and WebSocket for the browser client, once per process.
adapt();

/** What a meta message says, without the transport objects a failure carries. */
export function describe(message) {
    const described = {};
    for (const key of ["channel", "id", "clientId", "successful", "error", "subscription",
        "version", "minimumVersion", "supportedConnectionTypes", "advice", "ext"]) {
        if (message[key] !== undefined) {
            described[key] = message[key];
        }
    }
    if (message.failure) {
        const failure = message.failure;
        described.failure = {
            reason: failure.reason === undefined ? null : String(failure.reason),
            httpCode: failure.httpCode === undefined ? null : failure.httpCode,
            exception: failure.exception === undefined ? null : String(failure.exception),
        };
    }
    return described;
}

/**
 * Handshakes and subscribes to `channel` with `replay` (-1, -2 or a ReplayId).
 * Callbacks: onMeta(kind, message) for handshake and subscribe replies and failed connects,
 * onEvent(message) for each delivered event.
 */
export function startClient({ url, token, scheme, channel, replay, websocket, name },
    { onMeta, onEvent }) {
    const cometd = new CometD(name);
    if (!websocket) {
        // What Salesforce's samples do (`cometd.websocketEnabled = false`).
        cometd.unregisterTransport("websocket");
    }
    cometd.configure({
        url,
        requestHeaders: { Authorization: `${scheme} ${token}` },
        logLevel: "warn",
    });
    const replayExtension = new ReplayExtension();
    replayExtension.setChannel(channel);
    replayExtension.setReplay(replay);
    cometd.registerExtension("replay", replayExtension);

    cometd.addListener("/meta/handshake", (message) => {
        onMeta("handshake", message);
        if (message.successful) {
            cometd.subscribe(channel, onEvent, (reply) => onMeta("subscribe", reply));
        }
    });
    cometd.addListener("/meta/connect", (message) => {
        if (!message.successful) {
            onMeta("connect", message);
        }
    });
    cometd.handshake();
    return { cometd, replayExtension };
}

/**
 * Disconnects (if still connected) and calls `done(reply)` with the `/meta/disconnect` reply,
 * or `done(null)` if there was nothing to disconnect or no reply within 3 s.
 */
export function stopClient(cometd, done) {
    let called = false;
    const once = (reply) => {
        if (!called) {
            called = true;
            clearTimeout(timer);
            done(reply || null);
        }
    };
    const timer = setTimeout(() => once(null), 3000);
    if (cometd.isDisconnected()) {
        once(null);
    } else {
        cometd.disconnect(once);
    }
}
