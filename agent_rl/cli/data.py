"""`agent-rl data generate kg|arith`, `agent-rl data convert gsm8k|webqsp|cwq`, `agent-rl data kg-demos|arith-demos`,
`agent-rl data export-ntriples`."""
from __future__ import annotations

import sys

from agent_rl.tasks.registry import GENERATABLE

HELP = ("Generate the embedded data sets (synthetic KG, arithmetic), convert GSM8K / RoG-WebQSP / RoG-CWQ, "
        "or write gold demonstrations for sft.*")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="data_cmd", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="generate a data set (deterministic by --seed)",
                       description="Generate train/val/test parquet files (and kg_store.json for kg) under --out. "
                                   "The same seed writes byte-identical files.")
    g.add_argument("kind", choices=list(GENERATABLE), help="kg: synthetic knowledge-graph QA; arith: arithmetic word problems")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    for split, n in (("train", 2000), ("val", 200), ("test", 200)):
        g.add_argument(f"--{split}", type=int, default=n, help=f"rows of the {split} split (default {n}; 0 skips it)")
    g.add_argument("--hops", default=None,
                   help="kg only: hop mix as HOPS:WEIGHT,... (default 1:0.45,2:0.4,3:0.15)")
    c = sub.add_parser("convert", help="convert a real data set into our row schema",
                       description="GSM8K: jsonl/json/parquet with question, answer ('... #### n'). "
                                   "webqsp/cwq: RoG parquet with id, question, answer, q_entity, a_entity, graph; "
                                   "subgraphs are merged into <out>/kg_store.json.")
    c.add_argument("kind", choices=["gsm8k", "webqsp", "cwq"], help="source data set")
    c.add_argument("--input", required=True, nargs="+", help="input file(s) of one split")
    c.add_argument("--split", default="train", help="split name, also the output file name (default train)")
    c.add_argument("--out", required=True, help="output folder")
    d = sub.add_parser("kg-demos", help="gold demonstrations of a KG folder's questions (for sft.*)",
                       description="Follow each row's gold query through the KG store, one kg_query call per turn "
                                   "(relations, then entities, per hop), and end with the gold answer. Writes a "
                                   "parquet with a `messages` column (TRL / verl multi-turn SFT shape).")
    d.add_argument("--data", required=True, help="KG data folder (<split>.parquet + kg_store.json)")
    d.add_argument("--split", default="train", help="split to demonstrate (default train)")
    d.add_argument("--out", default=None, help="output file (default <data>/sft.parquet)")
    d.add_argument("--max-turns", type=int, default=7, help="skip rows needing more assistant turns (default 7)")
    a = sub.add_parser("arith-demos", help="gold demonstrations of an arithmetic folder's problems (for sft.*)",
                       description="Call the calculator of the tool YAML on each row's expression (one turn), then "
                                   "answer with its result; rows whose result is not the gold answer are skipped. "
                                   "Writes a parquet with a `messages` column (TRL / verl multi-turn SFT shape).")
    a.add_argument("--data", required=True, help="arithmetic data folder (<split>.parquet)")
    a.add_argument("--split", default="train", help="split to demonstrate (default train)")
    a.add_argument("--out", default=None, help="output file (default <data>/sft.parquet)")
    a.add_argument("--tool-config", default=None,
                   help="tool YAML declaring the calculator (default: configs/tool_config/arith_tool_config.yaml)")
    x = sub.add_parser("export-ntriples", help="export a KG store as RDF in Freebase shape (for kg_query's sparql backend)",
                       description="Write the KG store as N-Quads (.nq: one named graph per question, "
                                   "urn:agent-rl:kg:<sample_id>) or N-Triples (.nt: one graph): mids ns:m.0..., "
                                   "ns:type.object.name literals, relations under ns:. Load it with "
                                   "`oxigraph load --location DIR --file FILE`.")
    x.add_argument("--store", required=True, help="KG store file (kg_store.json)")
    x.add_argument("--out", required=True, help="output file, .nq or .nt")


def _hist(d) -> str:
    return " ".join(f"{k}:{v}" for k, v in d.items())


def _histograms(h) -> str:
    """A split's histograms as its task's generator reports them: `hops 1:12 2:9 | cvt 3 | same-name 1`."""
    return " | ".join(f"{k.replace('_', '-')} {_hist(v) if isinstance(v, dict) else v}" for k, v in h.items())


def run(args) -> int:
    if args.data_cmd == "export-ntriples":
        from agent_rl.tasks.kg.ntriples import export_ntriples

        try:
            s = export_ntriples(args.store, args.out)
        except (ValueError, OSError, KeyError) as e:    # bad input: one line, exit 2
            print(f"agent-rl data export-ntriples: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}: {s['samples']} subgraphs, {s['entities']} entities, {s['triples']} triples "
              f"({s['statements']} statements)")
        return 0
    try:
        if args.data_cmd == "generate":
            from agent_rl.tasks.generate import generate_dataset

            s = generate_dataset(args.kind, args.out, seed=args.seed,
                                 sizes={"train": args.train, "val": args.val, "test": args.test}, hops=args.hops)
            for split, path in s["files"].items():
                extra = _histograms(s["histograms"][split])
                print(f"wrote {path}: {s['rows'][split]} rows" + (f" | {extra}" if extra else ""))
            for line in s.get("notes", ()):     # what the task adds (kg: its KG store)
                print(line)
        elif args.data_cmd in ("kg-demos", "arith-demos"):
            if args.data_cmd == "kg-demos":
                from agent_rl.tasks.kg.demos import write_kg_demos

                s = write_kg_demos(args.data, out=args.out, max_turns=args.max_turns, split=args.split)
            else:
                from agent_rl.tasks.arith.demos import write_arith_demos

                s = write_arith_demos(args.data, out=args.out, split=args.split, tool_config=args.tool_config)
            print(f"wrote {s['file']}: {s['demos']} demonstrations of {s['rows']} rows | skipped {_hist(s['skipped']) or 'none'}")
        else:
            from agent_rl.tasks.convert import convert_dataset

            try:
                s = convert_dataset(args.kind, args.input, args.out, split=args.split)
            except (ValueError, FileNotFoundError) as e:   # missing, or not in the published schema: one line
                print(f"agent-rl data convert: {' '.join(str(e).split())}", file=sys.stderr)
                return 2
            print(f"wrote {s['file']}: {s['rows']} rows")
            for line in s.get("notes", ()):     # what the task adds (webqsp / cwq: the KG store)
                print(line)
    except (ValueError, FileNotFoundError) as e:    # bad input: one line, exit 2 like every command's config errors
        print(f"agent-rl data: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0
