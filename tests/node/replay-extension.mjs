// The replay extension the tests register is the product's: clients/js/cometd-replay.js
// (Salesforce's sample `cometdReplayExtension.js` as an ES module for browsers and Node).
export { ReplayExtension } from "../../clients/js/cometd-replay.js";
