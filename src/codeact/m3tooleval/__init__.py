"""M3ToolEval, the CodeAct paper's benchmark: 82 multi-tool tasks in code, JSON and text action modes.

Data from xingyaoww/code-act (MIT licence, `data/LICENSE.code-act.MIT.txt`); tools and grading
re-implemented. `codeact bench m3tooleval --model MODEL` or `python -m codeact.m3tooleval`.
"""

from codeact.m3tooleval.agent_mode import run_codeact_episode
from codeact.m3tooleval.benchmark import run_benchmark
from codeact.m3tooleval.grader import is_correct
from codeact.m3tooleval.harness import MODES, Episode, Turn, run_episode
from codeact.m3tooleval.results import format_table, published_rows, summarize
from codeact.m3tooleval.tasks import Task, load_tasks
from codeact.m3tooleval.tools import CATEGORIES, ToolSet, WebBrowser, toolset

__all__ = [
    "CATEGORIES",
    "MODES",
    "Episode",
    "Task",
    "ToolSet",
    "Turn",
    "WebBrowser",
    "format_table",
    "is_correct",
    "load_tasks",
    "published_rows",
    "run_benchmark",
    "run_codeact_episode",
    "run_episode",
    "summarize",
    "toolset",
]
