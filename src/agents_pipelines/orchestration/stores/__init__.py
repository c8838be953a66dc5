"""The stores agents_pipelines keeps beside a Dagster instance's own storage.

- ``checkpoints``: the LangGraph checkpoints of a run's graph, so its retries resume it;
- ``spend_journal``: the running spend of step attempts still in flight (spend limits);
- ``databases``: where each store lives (the instance's PostgreSQL database, or a SQLite
  file in its storage folder) and how it is opened and migrated.

They take a Dagster instance or step context, so they stay under ``orchestration/``, the
one home of Dagster; the instance's own storages (``pool_slots``) are Dagster's classes.
"""
