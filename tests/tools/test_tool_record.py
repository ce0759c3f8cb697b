"""The tool-call record's status vocabulary and its one notion of a successful call."""
from agent_rl.tool_runtime import record as R
from agent_rl.tool_runtime.record import ToolCallRecord


def _rec(status, metrics=None):
    return ToolCallRecord(name="t", arguments={}, observation="", status=status, metrics=metrics or {})


def test_succeeded_needs_status_ok_and_no_reported_failure():
    assert _rec(R.OK).succeeded                                   # a tool that reports no success flag
    assert _rec(R.OK, {"success": True}).succeeded
    assert not _rec(R.OK, {"success": False}).succeeded           # ran, but the tool says it failed (KG error, 1/0)
    for status in R.CALL_STATUSES:
        if status != R.OK:
            assert not _rec(status, {"success": True}).succeeded


def test_statuses_are_distinct_and_grouped():
    assert len(set(R.CALL_STATUSES)) == len(R.CALL_STATUSES)
    assert set(R.LOOP_STATUSES) <= set(R.CALL_STATUSES) and set(R.MALFORMED_STATUSES) <= set(R.CALL_STATUSES)
    assert R.OK not in R.LOOP_STATUSES + R.MALFORMED_STATUSES

