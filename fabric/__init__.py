"""The Redis substrate: settings, key schema, contract ids, epochs and Lua scripts."""
