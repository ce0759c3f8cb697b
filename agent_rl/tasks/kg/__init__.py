"""KG question answering (after KG-R1): synthetic questions over per-question subgraphs (`synth`, `schema`,
`names`, `traverse`, written by `generate`), RoG WebQSP / CWQ conversion (`convert_rog`), N-Triples export
(`ntriples`), gold look-up demonstrations (`demos`), the reward (`reward`) and the KG server a run starts
(`server`). The tool itself is `tools/kg_query.py`, beside its server `tools/kg_server.py`."""
