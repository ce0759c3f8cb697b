"""Tool interface, YAML loader and runtime. See docs/tools.md.

    from agent_rl.tool_runtime.runtime import ToolRuntime
    from agent_rl.tool_runtime.base import BaseTool, ToolResponse, TransientToolError
"""
