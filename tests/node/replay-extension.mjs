// The Salesforce replay extension for the CometD JavaScript client, in the shape of Salesforce's
// sample `cometdReplayExtension.js`: it switches itself on when the handshake reply carries
// `ext.replay == true`, adds `ext.replay = {<channel>: <replayId>}` to every `/meta/subscribe`,
// and remembers the ReplayId of every event delivered on its channel, so a re-handshake
// (which makes CometD forget its subscriptions) re-subscribes from the last event seen.

const REPLAY_FROM_KEY = "replay";

export class ReplayExtension {
    #extensionEnabled = false;
    #channel = null;
    #replay = null;

    setExtensionEnabled(extensionEnabled) {
        this.#extensionEnabled = extensionEnabled;
    }

    setChannel(channel) {
        this.#channel = channel;
    }

    setReplay(replay) {
        this.#replay = parseInt(replay, 10);
    }

    get replay() {
        return this.#replay;
    }

    registered(name, cometd) {}

    incoming(message) {
        if (message.channel === "/meta/handshake") {
            if (message.ext && message.ext[REPLAY_FROM_KEY] == true) {
                this.#extensionEnabled = true;
            }
        } else if (message.channel === this.#channel && message.data && message.data.event
            && message.data.event.replayId) {
            this.#replay = message.data.event.replayId;
        }
    }

    outgoing(message) {
        if (message.channel === "/meta/subscribe" && this.#extensionEnabled) {
            if (!message.ext) {
                message.ext = {};
            }
            const replayFromMap = {};
            replayFromMap[this.#channel] = this.#replay;
            message.ext[REPLAY_FROM_KEY] = replayFromMap;
        }
    }
}
