"""Bayeux (CometD) long-polling, wire-compatible with the Salesforce Streaming API."""
