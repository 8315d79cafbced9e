"""Engine and catalog implementations behind the `app` protocols. Driver errors stay in here."""
