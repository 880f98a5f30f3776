"""The HTTP front door: the original service's API, OpenAI's speech API, jobs over HTTP and a
dashboard, all thin layers over the same durable queue as the inbox (ttsd.intake.requests)."""
