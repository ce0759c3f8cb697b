"""Tool interface, YAML loader and runtime. See docs/tools.md.

    from agent_rl.tool_runtime.runtime import ToolRuntime
    from agent_rl.tool_runtime.base import BaseTool, ToolResponse, TransientToolError
    from agent_rl.tool_runtime.record import ToolCallRecord, OK, ...   # a call's record and status names
"""
