// @ts-check
/**
 * The Salesforce replay extension for the official CometD JavaScript client (npm `cometd`),
 * in the shape of Salesforce's sample `cometdReplayExtension.js`, as a dependency-free ES
 * module for browsers and Node.
 *
 * It switches itself on when the handshake reply carries `ext.replay == true` (replaybus
 * always sends it), adds `ext.replay = {<channel>: <replayId>}` to every `/meta/subscribe`,
 * and remembers the ReplayId of every event delivered on its channel, so a re-handshake
 * (which makes CometD forget its subscriptions) re-subscribes from the last event seen.
 *
 * ```js
 * import { CometD } from "cometd";
 * import { ReplayExtension } from "./cometd-replay.js";
 *
 * const replay = new ReplayExtension({ channel: "/event/Order_Placed__e", replay: -2 });
 * cometd.registerExtension("replay", replay);
 * ```
 *
 * @module cometd-replay
 */

const REPLAY_FROM_KEY = "replay";

/**
 * The parts of a Bayeux message the extension reads and writes.
 * @typedef {object} BayeuxMessage
 * @property {string} channel
 * @property {any} [data]
 * @property {Record<string, any>} [ext]
 */

/**
 * @typedef {object} ReplayOptions
 * @property {string} [channel] the channel to replay (also `setChannel`)
 * @property {number | string} [replay] -1 new events only, -2 every retained event, or a
 *   ReplayId N for the events after N (also `setReplay`)
 */

export class ReplayExtension {
    #extensionEnabled = false;
    /** @type {string | null} */
    #channel = null;
    /** @type {number | null} */
    #replay = null;

    /** @param {ReplayOptions} [options] */
    constructor(options = {}) {
        if (options.channel !== undefined) {
            this.setChannel(options.channel);
        }
        if (options.replay !== undefined) {
            this.setReplay(options.replay);
        }
    }

    /**
     * Forces the extension on (or off) before the handshake says so.
     * @param {boolean} extensionEnabled
     */
    setExtensionEnabled(extensionEnabled) {
        this.#extensionEnabled = extensionEnabled;
    }

    /** @param {string} channel */
    setChannel(channel) {
        this.#channel = channel;
    }

    /** @param {number | string} replay -1, -2 or a ReplayId */
    setReplay(replay) {
        this.#replay = typeof replay === "number" ? replay : parseInt(replay, 10);
    }

    /** The position the next `/meta/subscribe` asks for: the last ReplayId seen, once any. */
    get replay() {
        return this.#replay;
    }

    /** The channel whose position is tracked. */
    get channel() {
        return this.#channel;
    }

    /** Whether `/meta/subscribe` messages get `ext.replay`. */
    get enabled() {
        return this.#extensionEnabled;
    }

    /**
     * Called by CometD when the extension is registered.
     * @param {string} name
     * @param {unknown} cometd
     */
    registered(name, cometd) {}

    /** Called by CometD when the extension is unregistered. */
    unregistered() {}

    /**
     * @param {BayeuxMessage} message
     * @returns {BayeuxMessage}
     */
    incoming(message) {
        if (message.channel === "/meta/handshake") {
            if (message.ext && message.ext[REPLAY_FROM_KEY] == true) {
                this.#extensionEnabled = true;
            }
        } else if (message.channel === this.#channel && message.data && message.data.event
            && message.data.event.replayId) {
            this.#replay = message.data.event.replayId;
        }
        return message;
    }

    /**
     * @param {BayeuxMessage} message
     * @returns {BayeuxMessage}
     */
    outgoing(message) {
        if (message.channel === "/meta/subscribe" && this.#extensionEnabled) {
            if (!message.ext) {
                message.ext = {};
            }
            /** @type {Record<string, number | null>} */
            const replayFromMap = {};
            if (this.#channel !== null) {
                replayFromMap[this.#channel] = this.#replay;
            }
            message.ext[REPLAY_FROM_KEY] = replayFromMap;
        }
        return message;
    }
}
