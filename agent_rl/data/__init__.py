"""Data layer: row schema (`schema`), prompt texts (`prompts`), parquet I/O (`parquet_io`), loading and
batching (`loader`), demonstration files (`demos`). The tasks' generators and converters live with their task
(`agent_rl/tasks/`). See docs/data.md."""
