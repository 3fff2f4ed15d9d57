"""spark-submit entry points, one per stage; installed as the `meltrca_jobs` package."""
