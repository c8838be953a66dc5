"""Performance benchmarks of agents_pipelines (not part of the pytest suite).

Run them with ``.venv/bin/python -m benchmarks`` (``--quick``, ``--only NAME``); see README.md.
"""
