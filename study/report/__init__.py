"""Report: a sweep's MLflow runs -> tidy tables -> figures -> REPORT.md (never trains)."""
