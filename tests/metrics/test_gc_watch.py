"""GcWatch counts and times Python's collections between start and stop, and leaves gc.callbacks as it found them."""
import gc

from agent_rl.metrics.gc_watch import GcWatch


def test_counts_the_collections_of_each_generation_while_it_watches():
    gc.collect()
    before = list(gc.callbacks)
    watch = GcWatch().start()
    assert watch.objects_at_start > 0
    gc.collect(0)
    gc.collect(2)
    gc.collect(2)
    out = watch.stop()
    assert gc.callbacks == before
    assert out["collections"][0] >= 1 and out["collections"][2] == 2   # allocation-triggered ones may add to gen 0/1
    assert abs(out["total_s"] - sum(out["seconds"])) < 1e-5 and 0 < out["longest_s"] <= out["total_s"] + 1e-6
    assert out["tracked_objects"] == watch.objects_at_start and out["frozen_objects"] == gc.get_freeze_count()
    gc.collect(2)
    assert watch.stop()["collections"][2] == 2                          # stopped: no longer counting, stop is idempotent


def test_a_collection_already_running_at_start_is_not_counted():
    watch = GcWatch()
    watch._callback("stop", {"generation": 2, "collected": 0, "uncollectable": 0})   # its start was never seen
    assert watch.collections == [0, 0, 0]
    watch._callback("start", {"generation": 1})
    watch._callback("stop", {"generation": 1})
    assert watch.collections == [0, 1, 0]
