"""Explanations of anomalies and incidents (SPEC §5) and the pieces they are built from.

- ``text``: number/time formatting and sanitising of telemetry text (shared by every writer)
- ``knowledge_base``: evidence patterns (indicator kinds, fault signatures, change events) -> causes
- ``context``: Spark transforms gathering per-incident facts and per-anomaly context
- ``correlation``: Pearson correlation of anomalous series within an incident, in Spark
- ``template``: the default writer (offline, deterministic)
- ``llm`` / ``http``: the OpenAI-compatible writer with retries, timeouts and template fallback
- ``writers``: both writers behind one Spark transform (concurrency cap, cache by signature)
- ``documents``: the metadata / incident JSON documents and their JSON Schemas
"""
