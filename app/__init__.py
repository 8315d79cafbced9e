"""replaybus domain: settings, model, errors, channels, recovery, services and pure wire codecs.

Nothing here imports a web framework or a storage driver:
`api/` drives it, `storage/` implements it.
"""
