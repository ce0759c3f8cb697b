"""Data layer: row schema (`schema`), prompt texts (`prompts`), parquet I/O (`parquet_io`), loading and
batching (`loader`), generators (`arith`, `kg_synth` + `kg_schema`/`kg_names`/`kg_traverse`, driven by
`generate`), converters (`convert_gsm8k`, `convert_rog`, driven by `convert`) and the KG store file
(`kg_store`). See docs/data.md."""
