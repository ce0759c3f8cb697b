"""Event-loop CPU per turn of the rollout loop with sglang 0.5.17's real TokenizerManager on the thread, on a CPU:
a stand-in scheduler process (fake_scheduler.py) answers every request after its tokens' worth of decode steps.
Setup and usage: README.md in this folder. `COALESCE=1` keeps the wrapper's request batching on (the default of
agent-rl); unset, each request goes out on its own. `PROF=1` prints a cProfile of each mode. The loop is asyncio's
own, as in `agent-rl bench` and training; `LOOP=uvloop` runs it on uvloop. `NOTIFY=N` sets sglang's
`batch_notify_size` (finished requests its tokenizer manager wakes per loop pass, default 16). `TOKENS=DIST` sets
the tokens per turn (default 128; e.g. the suite's heavy tail `pareto:alpha=1.2,scale=32,max=512`). `STACKS=signal`
or `STACKS=thread` prints each mode's stack samples (agent_rl/bench/stack_sampler.py) taken that way: the thread's CPU
by owner and the functions seen most."""
import asyncio, multiprocessing as mp, os, sys, time, statistics


def main():
    modes_arg, steps = sys.argv[1], int(sys.argv[2])
    step_s = float(sys.argv[3]) / 1e3 if len(sys.argv) > 3 else 0.005
    from agent_rl.model.prepare import cache_dir, tiny_model_dir, tokenizer_dir
    path = tiny_model_dir(os.path.join(cache_dir(), "test-models", "tiny-llama-h64-l2"))
    from sglang.srt.server_args import ServerArgs, PortArgs
    sa = ServerArgs(model_path=path, skip_tokenizer_init=True, device="cpu", log_level="error",
                    enable_priority_scheduling=True, schedule_low_priority_values_first=True,
                    batch_notify_size=int(os.environ.get("NOTIFY", "16")))
    pa = PortArgs.init_new(sa)
    import fake_scheduler
    proc = mp.get_context("spawn").Process(target=fake_scheduler.run, args=(pa, step_s), daemon=True)
    proc.start()
    from sglang.srt.managers.tokenizer_manager import TokenizerManager
    tm = TokenizerManager(sa, pa)
    from sglang.srt.entrypoints.engine import Engine as _E; eng = _E.__new__(_E)
    eng.tokenizer_manager, eng.server_args = tm, sa
    count = {"n": 0}
    orig = tm.generate_request

    def counted(*a, **k):   # every request's generator, whichever way the wrapper starts it
        count["n"] += 1
        return orig(*a, **k)
    tm.generate_request = counted

    from transformers import AutoTokenizer
    from agent_rl.bench.instrument import InstrumentedEngine
    from agent_rl.bench.rollout_bench import RolloutBench, RolloutBenchSettings
    from agent_rl.bench.workload import Dist, Workload
    from agent_rl.bench.loop_cpu import _Run
    from agent_rl.bench.modes import parse_modes
    from agent_rl.bench.output_tap import OutputTap
    from agent_rl.config.schema import RolloutConfig
    from agent_rl.engines.sglang_engine import SGLangEngine
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    engine = SGLangEngine.wrap(eng, priority_scheduling=True)
    w = Workload(num_prompts=64, n=4, turns=Dist.parse("3"), tokens_per_turn=Dist.parse(os.environ.get("TOKENS", "128")),
                 tool_latency=Dist.parse("0"), tool_failure_rate=0.0, seed=0)
    cfg = RolloutConfig(max_model_len=8192, max_concurrent_trajectories=256, progress_bar=False)
    settings = RolloutBenchSettings(workload=w, ceiling=False, progress=False, flush_cache=False)
    bench = RolloutBench(InstrumentedEngine(engine), tok, settings, cfg)
    bench.check_context()
    tap = OutputTap.install(engine)
    engine.coalesce_submits = bool(os.environ.get("COALESCE"))
    # the loop `agent-rl bench` and the training worker run on: asyncio's own (made before sglang's import sets
    # uvloop's policy); LOOP=uvloop for sglang's
    loop = asyncio.new_event_loop() if os.environ.get("LOOP") == "uvloop" else asyncio.SelectorEventLoop()
    asyncio.set_event_loop(loop)

    async def one(spec):
        run = _Run(bench, spec, False)
        rows = []
        try:
            for k in range(1 + steps):
                r0, c0, w0, m0 = count["n"], time.thread_time(), time.perf_counter(), tap.counts()
                await run.step(k)
                if k:
                    m1 = tap.counts()
                    rows.append(((time.thread_time() - c0) / (count["n"] - r0) * 1e3, time.perf_counter() - w0,
                                 m1[0] - m0[0], m1[1] - m0[1]))
        finally:
            await run.close()
        return rows

    import cProfile, pstats
    from agent_rl.bench.stack_sampler import StackSampler, owners_line
    for spec in parse_modes(modes_arg, "0.5"):
        prof = cProfile.Profile() if os.environ.get("PROF") else None
        if prof: prof.enable()
        sampler = StackSampler().start(timer=os.environ["STACKS"] != "thread") if os.environ.get("STACKS") else None
        rows = loop.run_until_complete(one(spec))
        if sampler is not None:
            st = sampler.stop()
            print(f"== {spec.name} stacks ({st['method']}, {st['samples']} samples): CPU {owners_line(st, 8, 'owners_cpu')}; "
                  + ", ".join(f"{k} {100 * v:.1f}%" for k, v in st["functions"][:int(os.environ.get("STACKS_TOP", "8"))]))
        if prof:
            prof.disable(); st = pstats.Stats(prof); st.sort_stats("tottime"); print("==", spec.name); st.print_stats(25)
            if os.environ.get("PROF_DIR"):   # the whole profile, for pstats comparisons between modes
                st.dump_stats(os.path.join(os.environ["PROF_DIR"], spec.name.replace(" ", "_") + ".pstats"))
        print(f"{spec.name}: cpu ms/turn median {statistics.median(r[0] for r in rows):.3f} min {min(r[0] for r in rows):.3f}; "
              f"step s {statistics.median(r[1] for r in rows):.2f}; messages/step {statistics.median(r[2] for r in rows):.0f}; "
              f"outputs/step {statistics.median(r[3] for r in rows):.0f}", flush=True)
    proc.kill()
    os._exit(0)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
