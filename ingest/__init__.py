"""The WebSocket ingest process: frames → validated, conflated batches → one Lua call per epoch."""
