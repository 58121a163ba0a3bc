"""A small MCP server over stdio for the tests, written with the SDK's server API."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

app = MCPServer("test-tools")


class Forecast(BaseModel):
    city: str
    celsius: float


@app.tool()
def add(a: int, b: int = 2) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def forecast(city: str) -> Forecast:
    """The weather forecast for a city."""
    return Forecast(city=city, celsius=21.5)


@app.tool()
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@app.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ToolError(f"failed because {reason}")


if __name__ == "__main__":
    import sys

    if "--only" in sys.argv:  # serve only the named tools
        keep = sys.argv[sys.argv.index("--only") + 1].split(",")
        for tool in app._tool_manager.list_tools():
            if tool.name not in keep:
                app.remove_tool(tool.name)
    app.run("stdio")
