// @ts-check
/**
 * replaybus for browsers: subscribe to a channel over Server-Sent Events and never lose your
 * place. Dependency-free ES module; works with the browser's `EventSource` or any
 * implementation passed as the `EventSource` option (for example under Node).
 *
 * The server side is `GET {baseUrl}/v1/stream{channel}?replayId=-1|-2|N&access_token=...`:
 * every event is `id: <ReplayId>` + `data: <envelope JSON>`, a gap is `event: gap`.
 *
 * Resuming: while the server keeps accepting it, the browser's `EventSource` reconnects by
 * itself and sends `Last-Event-ID`, so the server resumes after the last event. When the
 * server refuses that reconnect (an expired token answers 401, which leaves the `EventSource`
 * CLOSED) or the connection fails for good, this helper opens a new `EventSource` itself, with
 * a fresh token and `replayId=<the last ReplayId seen>`, after a jittered exponential backoff.
 *
 * With the `checkpoint` option, the position is also kept outside the page (`localStorage` by
 * default), so a reload, or the page opened again later, resumes after the last event it
 * processed.
 *
 * @module replaybus
 */

/**
 * One event, as the server sends it in `data:`.
 * @typedef {object} Envelope
 * @property {string} channel the channel it was published to, e.g. `/event/Order_Placed__e`
 * @property {number} replayId its ReplayId (also the SSE `id:`)
 * @property {string} uuid its EventUuid
 * @property {string} createdDate ISO-8601, e.g. `2026-11-22T22:33:08.213Z`
 * @property {string | null} schema the schema id, if the channel has one
 * @property {unknown} payload what was published
 */

/**
 * Events that can no longer be delivered. From the server (`event: gap`): `requested` is the
 * position asked for, `earliest` the oldest ReplayId still retained (null if none) and
 * `latest` the newest ever assigned. On a wildcard stream, all three are null and `reason`
 * says that events published while disconnected were not replayed.
 * @typedef {object} Gap
 * @property {number | null} requested
 * @property {number | null} earliest
 * @property {number | null} latest
 * @property {string} [reason]
 */

/**
 * What went wrong, and what happens next.
 * @typedef {object} SubscriptionError
 * @property {"token" | "position" | "stream" | "data" | "handler" | "checkpoint"} phase
 *   `token`: the token function failed; `position`: looking up the channel's current
 *   position (for `from: -1`) failed; `stream`: the `EventSource` reported an error;
 *   `data`: an event's data was not JSON; `handler`: `onEvent` or `onGap` threw;
 *   `checkpoint`: the checkpoint store failed, or no key could be made for it (the
 *   subscription goes on, with its position in memory only)
 * @property {string} message
 * @property {number | null} retryIn milliseconds until this helper connects again, or null
 *   when it does not have to (the browser reconnects by itself, or nothing was interrupted)
 * @property {unknown} [cause]
 */

/**
 * A connection that was established (the server answered 200 and the stream is open).
 * @typedef {object} OpenInfo
 * @property {boolean} reconnected false for the first connection of this subscription
 * @property {boolean} byBrowser true when the `EventSource` reconnected by itself
 * @property {number | null} replayId the position this helper asked for (null when the
 *   browser reconnected by itself with `Last-Event-ID`, or for a wildcard stream)
 */

/**
 * An access token, or a function returning one (possibly asynchronously). A function is
 * called before every connection this helper opens, so it can hand out a fresh token.
 * @typedef {string | (() => string | PromiseLike<string>)} TokenSource
 */

/**
 * The subset of the standard `EventSource` this helper uses.
 * @typedef {object} EventSourceLike
 * @property {number} readyState 0 CONNECTING, 1 OPEN, 2 CLOSED
 * @property {(type: string, listener: (event: any) => void) => void} addEventListener
 * @property {() => void} close
 */

/**
 * @typedef {new (url: string) => EventSourceLike} EventSourceConstructor
 */

/**
 * Where a subscription keeps its position between page loads: the last processed ReplayId,
 * as a decimal string, under a key. `get` may return a promise; `set` is not awaited.
 * @typedef {object} CheckpointStore
 * @property {(key: string) => string | null | undefined | PromiseLike<string | null | undefined>} get
 * @property {(key: string, value: string) => unknown} set
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {TokenSource} token
 * @property {number} [from] where to start: -1 new events only (the default), -2 every
 *   retained event, or a ReplayId N for exactly the events after N
 * @property {(event: Envelope, message: MessageEvent) => void | Promise<unknown>} [onEvent]
 *   may return a promise: with `checkpoint`, the position is saved once it settles
 * @property {(gap: Gap) => void} [onGap]
 * @property {(error: SubscriptionError) => void} [onError]
 * @property {(info: OpenInfo) => void} [onOpen]
 * @property {EventSourceConstructor} [EventSource] defaults to `globalThis.EventSource`
 * @property {typeof fetch} [fetch] used once for `from: -1` (see below); defaults to
 *   `globalThis.fetch`
 * @property {number} [minDelay] first backoff delay in ms (default 500)
 * @property {number} [maxDelay] largest backoff delay in ms (default 30000)
 * @property {boolean | CheckpointStore} [checkpoint] keep the position across page loads:
 *   `true` for `localStorage`, or a store of your own. A saved position wins over `from`.
 *   Not for wildcard streams (they are live-only).
 * @property {string} [checkpointKey] the key the position is saved under; by default
 *   `replaybus:<baseUrl>:<tenant>:<channel>`, the tenant read from the token (`tid`)
 */

/**
 * @typedef {object} Subscription
 * @property {() => void} close stops the subscription: no more callbacks, no reconnects
 * @property {number | null} lastEventId the position a reconnect resumes from: the ReplayId
 *   of the last event delivered, or the position the subscription started at (null while
 *   none is known: `from: -2` before its first event, or a wildcard stream)
 */

const CONNECTING = 0;
const CLOSED = 2;

const CHECKPOINT_PREFIX = "replaybus:";

const WILDCARD_GAP_REASON =
    "wildcard streams are live-only: events published while this client was disconnected "
    + "are not replayed; subscribe to each channel to resume by ReplayId";

/**
 * Subscribes to `channel` (e.g. `/event/Order_Placed__e`, or a wildcard `/event/*`) on the
 * replaybus server at `baseUrl` (e.g. `https://events.example.com`, no trailing slash).
 *
 * With `from: -1`, the helper first reads the channel's newest ReplayId
 * (`GET /v1/channels{channel}` with the token) and streams from it: a browser cannot read the
 * position the server announces at the start of a stream (an `id:` line without data), so
 * this is what lets a subscription that is interrupted before its first event resume without
 * losing the events published meanwhile.
 *
 * @param {string} baseUrl
 * @param {string} channel
 * @param {SubscribeOptions} options
 * @returns {Subscription}
 */
export function subscribe(baseUrl, channel, options) {
    const {
        token,
        from = -1,
        onEvent = () => {},
        onGap = () => {},
        onError = () => {},
        onOpen = () => {},
        minDelay = 500,
        maxDelay = 30000,
    } = options;
    const EventSourceImpl = options.EventSource ?? /** @type {any} */ (globalThis).EventSource;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof EventSourceImpl !== "function") {
        throw new TypeError("no EventSource: pass one as the `EventSource` option");
    }
    if (!(from === -1 || from === -2 || (Number.isSafeInteger(from) && from >= 0))) {
        throw new RangeError(`from must be -1, -2 or a ReplayId, got ${from}`);
    }
    const wildcard = /\/\*\*?$/.test(channel);
    if (wildcard && from !== -1) {
        throw new RangeError("wildcard streams deliver live events only: use from -1");
    }
    const base = baseUrl.replace(/\/+$/, "");
    if (wildcard && options.checkpoint) {
        throw new RangeError("wildcard streams are live-only: they have no position to keep");
    }
    /** @type {CheckpointStore | null} */
    const store = options.checkpoint === true ? localStorageStore()
        : options.checkpoint ? options.checkpoint : null;
    /** @type {string | null} */
    let checkpointKey = null; // known once the first token is

    /** @type {number | null} */
    let lastEventId = from >= 0 ? from : null;
    /** @type {EventSourceLike | null} */
    let source = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    let timer = null;
    /** @type {AbortController | null} */
    let lookup = null;
    let closed = false;
    let failures = 0; // consecutive connections that did not open: drives the backoff
    let opened = false; // some connection of this subscription was open once
    let generation = 0; // which connection the listeners belong to

    /** @param {SubscriptionError} error */
    function report(error) {
        try {
            onError(error);
        } catch (thrown) {
            queueMicrotask(() => {
                throw thrown;
            });
        }
    }

    /** @returns {number} ms before the next connection, and counts one more failure */
    function backoff() {
        failures += 1;
        const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(failures - 1, 30));
        return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    }

    /**
     * Connects again later.
     * @param {Omit<SubscriptionError, "retryIn">} error
     */
    function retry(error) {
        if (closed) {
            return;
        }
        const delay = backoff();
        report({ ...error, retryIn: delay });
        timer = setTimeout(() => {
            timer = null;
            void connect();
        }, delay);
    }

    /** @returns {Promise<string>} */
    async function freshToken() {
        const value = typeof token === "function" ? await token() : token;
        if (typeof value !== "string" || value === "") {
            throw new TypeError("the token function returned no token");
        }
        return value;
    }

    /**
     * The channel's newest ReplayId (0 if nothing was ever published to it).
     * @param {string} accessToken
     * @returns {Promise<number>}
     */
    async function currentTop(accessToken) {
        lookup = new AbortController();
        try {
            const response = await fetchImpl(`${base}/v1/channels${channel}`, {
                headers: { Authorization: `Bearer ${accessToken}` },
                signal: lookup.signal,
            });
            if (!response.ok) {
                throw new Error(`GET /v1/channels${channel} answered ${response.status}`);
            }
            const answer = await response.json();
            if (!Number.isSafeInteger(answer.latest) || answer.latest < 0) {
                throw new Error(`GET /v1/channels${channel} gave no position`);
            }
            return answer.latest;
        } finally {
            lookup = null;
        }
    }

    async function connect() {
        let accessToken;
        try {
            accessToken = await freshToken();
        } catch (cause) {
            retry({ phase: "token", message: `could not get a token: ${cause}`, cause });
            return;
        }
        if (closed) {
            return;
        }
        if (store !== null && checkpointKey === null) {
            checkpointKey = options.checkpointKey ?? keyFor(accessToken);
            const saved = await loadCheckpoint();
            if (closed) {
                return;
            }
            if (saved !== null) {
                lastEventId = saved;
            }
        }
        if (lastEventId === null && from === -1 && !wildcard) {
            try {
                lastEventId = await currentTop(accessToken);
            } catch (cause) {
                if (!closed) {
                    retry({ phase: "position", message: `${cause}`, cause });
                }
                return;
            }
            if (closed) {
                return;
            }
            saveCheckpoint(lastEventId); // a reload before the first event resumes from here
        }
        const position = lastEventId ?? from;
        const query = new URLSearchParams();
        if (!wildcard) {
            query.set("replayId", String(position));
        }
        query.set("access_token", accessToken);
        open(`${base}/v1/stream${channel}?${query}`, wildcard ? null : position);
    }

    /**
     * @param {string} url
     * @param {number | null} position
     */
    function open(url, position) {
        const current = ++generation;
        const reconnected = opened;
        const stream = new EventSourceImpl(url);
        source = stream;
        let byBrowser = false; // the next `open` is the browser's own reconnect
        const live = () => !closed && current === generation;

        stream.addEventListener("open", () => {
            if (!live()) {
                return;
            }
            failures = 0;
            if (wildcard && opened && !byBrowser) {
                // Opened by this helper without Last-Event-ID: the server cannot tell that
                // this is a reconnect, so say what it would have said.
                deliverGap({ requested: null, earliest: null, latest: null,
                    reason: WILDCARD_GAP_REASON });
            }
            const info = { reconnected: reconnected || byBrowser, byBrowser,
                replayId: byBrowser ? null : position };
            opened = true;
            try {
                onOpen(info);
            } catch (cause) {
                report({ phase: "handler", message: `onOpen threw: ${cause}`, retryIn: null, cause });
            }
        });

        stream.addEventListener("message", (/** @type {MessageEvent} */ message) => {
            if (!live()) {
                return;
            }
            let envelope;
            try {
                envelope = JSON.parse(message.data);
            } catch (cause) {
                report({ phase: "data", message: `an event's data is not JSON: ${cause}`,
                    retryIn: null, cause });
                return;
            }
            if (!wildcard) {
                const id = replayIdOf(message.lastEventId, envelope);
                if (id !== null) {
                    lastEventId = id;
                }
            }
            /** @type {unknown} */
            let handled;
            try {
                handled = onEvent(envelope, message);
            } catch (cause) {
                report({ phase: "handler", message: `onEvent threw: ${cause}`, retryIn: null, cause });
            }
            if (!wildcard && lastEventId !== null) {
                // Processed once onEvent has run, or once the promise it returned settled;
                // saved in event order, so a later event never saves past an earlier one
                // still being processed.
                const position = lastEventId;
                processed = processed
                    .then(() => handled)
                    .catch((cause) => {
                        report({ phase: "handler", message: `onEvent rejected: ${cause}`,
                            retryIn: null, cause });
                    })
                    .then(() => saveCheckpoint(position));
            }
        });

        stream.addEventListener("gap", (/** @type {MessageEvent} */ message) => {
            if (!live()) {
                return;
            }
            let gap;
            try {
                gap = JSON.parse(message.data);
            } catch (cause) {
                report({ phase: "data", message: `a gap's data is not JSON: ${cause}`,
                    retryIn: null, cause });
                return;
            }
            deliverGap(gap);
        });

        stream.addEventListener("error", (/** @type {Event} */ event) => {
            if (!live()) {
                return;
            }
            if (stream.readyState === CONNECTING) {
                // The stream ended and the browser reconnects by itself, with Last-Event-ID.
                byBrowser = true;
                report({ phase: "stream", message: "the stream was interrupted; reconnecting",
                    retryIn: null, cause: event });
                return;
            }
            if (stream.readyState === CLOSED) {
                // Refused (401, 403, 5xx...) or failed for good: take over, with a new token.
                stream.close();
                source = null;
                generation += 1;
                retry({ phase: "stream", message: "the server refused or closed the stream",
                    cause: event });
            }
        });
    }

    /**
     * The key of this subscription's position: base URL, tenant (from the token) and channel.
     * @param {string} accessToken
     * @returns {string}
     */
    function keyFor(accessToken) {
        const tenant = tenantOf(accessToken);
        if (tenant === null) {
            report({ phase: "checkpoint", retryIn: null, message: "the token names no tenant "
                + "(tid): pass checkpointKey to keep the position across page loads" });
            return "";
        }
        return `${CHECKPOINT_PREFIX}${base}:${tenant}:${channel}`;
    }

    /** @returns {Promise<number | null>} the saved position, if there is a valid one */
    async function loadCheckpoint() {
        if (store === null || checkpointKey === "") {
            return null;
        }
        try {
            const text = await store.get(/** @type {string} */ (checkpointKey));
            if (text === null || text === undefined) {
                return null;
            }
            const value = /^[0-9]+$/.test(text) ? Number(text) : NaN;
            if (Number.isSafeInteger(value)) {
                return value;
            }
            report({ phase: "checkpoint", retryIn: null,
                message: `ignoring the saved position ${JSON.stringify(text)}: not a ReplayId` });
        } catch (cause) {
            report({ phase: "checkpoint", retryIn: null,
                message: `could not read the saved position: ${cause}`, cause });
        }
        return null;
    }

    /** @param {number} position */
    /** Settles once every event so far was processed and its position saved. */
    let processed = Promise.resolve();

    function saveCheckpoint(position) {
        if (store === null || checkpointKey === null || checkpointKey === "") {
            return;
        }
        try {
            Promise.resolve(store.set(checkpointKey, String(position))).catch((cause) => {
                report({ phase: "checkpoint", retryIn: null,
                    message: `could not save the position: ${cause}`, cause });
            });
        } catch (cause) {
            report({ phase: "checkpoint", retryIn: null,
                message: `could not save the position: ${cause}`, cause });
        }
    }

    /** @param {Gap} gap */
    function deliverGap(gap) {
        try {
            onGap(gap);
        } catch (cause) {
            report({ phase: "handler", message: `onGap threw: ${cause}`, retryIn: null, cause });
        }
    }

    void connect();

    return {
        close() {
            closed = true;
            generation += 1;
            if (timer !== null) {
                clearTimeout(timer);
                timer = null;
            }
            lookup?.abort();
            source?.close();
            source = null;
        },
        get lastEventId() {
            return lastEventId;
        },
    };
}

/** @returns {CheckpointStore} the page's `localStorage`, read and written when used */
function localStorageStore() {
    return {
        get: (key) => globalThis.localStorage.getItem(key),
        set: (key, value) => globalThis.localStorage.setItem(key, value),
    };
}

/**
 * The tenant a replaybus access token (a JWT) was issued for: its `tid` claim, read without
 * verifying anything (the server does that); null when the token is not such a JWT.
 * @param {string} accessToken
 * @returns {string | null}
 */
function tenantOf(accessToken) {
    try {
        const part = accessToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
        const claims = JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, "=")));
        return typeof claims.tid === "string" && claims.tid !== "" ? claims.tid : null;
    } catch {
        return null;
    }
}

/**
 * An event's ReplayId: its SSE `id:` (or, failing that, the envelope's `replayId`).
 * @param {string} lastEventId
 * @param {any} envelope
 * @returns {number | null}
 */
function replayIdOf(lastEventId, envelope) {
    const id = /^[0-9]+$/.test(lastEventId) ? Number(lastEventId) : envelope?.replayId;
    return Number.isSafeInteger(id) && id >= 0 ? id : null;
}
