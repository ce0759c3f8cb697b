from agent_rl.orchestration.trainer import PromptFilter, Trainer


class _Renderer:
    def prompt_ids(self, messages):
        return list(range(len(messages[0]["content"])))


def test_prompt_filter_drops_long_rows_and_warns_once():
    warnings = []
    f = PromptFilter(_Renderer(), max_len=5, warn=warnings.append)
    rows = [{"prompt": [{"role": "user", "content": c}]} for c in ("abc", "abcdefgh", "abcde", "abcdefghij")]
    assert [f.ok(r) for r in rows] == [True, False, True, False]
    assert f.dropped == 2
    assert len(warnings) == 1 and "data.max_prompt_length=5" in warnings[0] and "8 tokens" in warnings[0]


def test_merge_train_metrics_rank0_values_max_times():
    merged = Trainer._merge_train([{"actor/pg_loss": 0.5, "timing/update_s": 1.0, "perf/cpu_max_rss_gb": 2.0},
                                   {"actor/pg_loss": 0.7, "timing/update_s": 3.0, "perf/cpu_max_rss_gb": 1.0}])
    assert merged == {"actor/pg_loss": 0.5, "timing/update_s": 3.0, "perf/cpu_max_rss_gb": 2.0}
