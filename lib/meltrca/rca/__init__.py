"""Root-cause analysis: service graph from spans, incidents from linked anomalies, ranking."""
