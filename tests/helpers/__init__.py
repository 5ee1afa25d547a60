"""Test helpers: commands run as a user runs them (`commands`), throwaway servers (`servers`), MLflow
queries and the verdicts' property (`mlflow_queries`), Keras callbacks named by `_target_` in tests
(`callbacks`, importable as `helpers.callbacks.<Name>` with `tests/` on the path).
"""
