"""meltrca: Spark batch jobs that find anomalies in MELT telemetry and name their root causes."""

__version__ = "0.1.0"
