"""The server's commands: ``python -m commands.migrate`` and ``convlab token`` (added to the
client's ``convlab`` through the ``convlab.commands`` entry-point group)."""
