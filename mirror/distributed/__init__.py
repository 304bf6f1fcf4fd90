"""Many workers on one PostgreSQL queue (``mirror sync --queue`` plans, ``mirror worker`` copies).

The queue is procrastinate's (jobs, retries, worker heartbeats); PostgreSQL also holds the state
the workers share: blob locations, upload sessions, 429 cooldowns and each run's progress. Jobs
carry a run id and a unit number; units carry registry names and settings references, never a
secret: every process resolves credentials from its own flags, auth files and YAML.
"""
