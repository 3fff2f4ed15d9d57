"""Synthetic MELT telemetry with injected faults and ground truth (`meltrca generate`).

plan (driver: topology, schedule, traffic shape) -> model (per-minute physics) -> units
(Spark tasks: traces, metrics, logs per system-hour) -> bronze tables + labels.json.
"""
