"""The durable queue: tables, schema migrations and every SQL statement ttsd runs. Jobs move through
their states here, chunks of long jobs are kept here, and the audio cache is indexed here."""
