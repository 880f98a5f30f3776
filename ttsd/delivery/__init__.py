"""Delivery: everything written into the outbox (audio files and status documents), atomically,
and status files kept true to the queue."""
