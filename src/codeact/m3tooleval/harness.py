"""The paper's M3ToolEval protocol: one episode of a task in code, JSON or text action mode.

The model gets the paper's prompt as the first user message and replies up to 10 times. A reply
holding `Answer:` proposes a solution, graded by the original rule; a wrong answer gets the
original "try again" message and the episode goes on. A reply holding `Action:` runs an action:
in code mode a Python block in a persistent `codeact.Sandbox` session whose tools run on the host
(so a browser's state lives on the host across turns), cut at 2,000 characters, with the original
message when it printed nothing; in JSON and text modes one tool call. Messages and parsing follow
the original harness, including its wording.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from codeact.lm.base import LM, Message
from codeact.m3tooleval.grader import is_correct
from codeact.m3tooleval.tasks import Task
from codeact.m3tooleval.tools import ToolSet
from codeact.sandbox.interpreter import ExecutionResult, Failure, Interpreter

Mode = Literal["code", "json", "text"]
MODES: tuple[Mode, ...] = ("code", "json", "text")
MAX_TURNS = 10
MAX_NEW_TOKENS = 512
ACTION_TIMEOUT_S = 30.0
OUTPUT_LIMIT = 2000
TRUNCATED = "...\n[Output Truncated]"
NO_OUTPUT = "[Executed Successfully with No Output, Did you forget to print?]"
WRONG_ANSWER = (
    "Your answer is incorrect. Please try again. Note that you should ONLY output the answer "
    "(e.g., single number), without any other text."
)
BOTH = "Invalid generation. Your output should contain either 'Action:' or 'Answer:', but not both."
NEITHER = "Invalid generation. Your output should contain either 'Action:' or 'Answer:'"
MANY_ANSWERS = "You have output more than one answer. Only the first answer will be used."
MANY_ACTIONS = "You have output more than one action. Only the first action will be used."

SandboxFactory = Callable[[ToolSet, float], Interpreter]
# Errors after which a sandbox session is gone; the next action starts a fresh one.
_SESSION_LOST = frozenset(kind.value for kind in (Failure.CRASHED, Failure.TIMEOUT, Failure.MEMORY_LIMIT))


# --- reply parsing ---------------------------------------------------------------------------------
def trim_reply(generation: str) -> str:
    """Cut a reply after its first `Answer:`/`Action:` block, as the original's post-processing."""
    generation = generation.lstrip()
    marks = list(re.finditer(r"(Answer:|Action:)", generation))
    if len(marks) <= 1:
        return generation
    trimmed = generation[: marks[1].start()].strip()
    after_action = trimmed.find("Action:") + len("Action:")
    end = trimmed.find("End Action", after_action)
    if end != -1:
        trimmed = trimmed[: end + len("End Action")].strip()
    thought = trimmed.find("Thought:", after_action)
    if thought != -1:
        trimmed = trimmed[:thought].strip()
    return trimmed


@dataclass
class ParsedReply:
    """`kind` is "answer", "action" or "invalid"; `content` the answer, action or message."""

    kind: Literal["answer", "action", "invalid"]
    content: str
    reminder: str | None = None


def parse_reply(generation: str) -> ParsedReply:
    """Split a (trimmed) reply into an answer, an action, or an invalid reply."""
    if "Answer:" in generation and "Action:" in generation:
        return ParsedReply("invalid", BOTH)
    if "Answer:" in generation:
        many = generation.count("Answer:") > 1
        answer = generation.split("Answer:")[1].strip()
        return ParsedReply("answer", answer, MANY_ANSWERS if many else None)
    if "Action:" in generation:
        many = generation.count("Action:") > 1
        action = generation.split("Action:")[1].lstrip()
        if "End Action" in action:
            action = action[: action.find("End Action")]
        return ParsedReply("action", action, MANY_ACTIONS if many else None)
    return ParsedReply("invalid", NEITHER)


def _number_or_text(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _truncate(text: str) -> str:
    return text[:OUTPUT_LIMIT] + TRUNCATED if len(text) > OUTPUT_LIMIT else text


# --- actions ---------------------------------------------------------------------------------------
def call_tool(tools: ToolSet, name: str, args: list[Any]) -> str:
    """One JSON- or text-mode tool call, with the original's messages for unknown tools and errors."""
    tool = tools.tools.get(name)
    if tool is None:
        return f"Cound not find tool with name {name}"
    try:
        result = tool.func(*args)
    except Exception:
        return (
            f"Failed to execute tool {name} with args {tuple(args)}. "
            "Did you try to invoke more than one tool at a time?"
        )
    return _truncate(str(result))


def run_call_action(tools: ToolSet, action: str, mode: Mode) -> str:
    """Parse and run a JSON-mode or text-mode action; malformed actions get the original hints."""
    if mode == "text":
        name, *raw_args = action.split(",")
        args: Any = [_number_or_text(a.strip()) for a in raw_args]
        name = name.strip()
    else:
        try:
            parsed = json.loads(action)
            name, args = parsed["tool"], parsed["args"]
        except Exception as exc:
            return (
                "Invalid action. You should output a JSON object with the following fields: 'tool' "
                f"(the name of the tool), 'args' (a list of arguments to the tool). Error: {exc}"
            )
    if not isinstance(args, list):
        args = [args]
    if not isinstance(name, str):
        return f"Cound not find tool with name {name}"
    return call_tool(tools, name, args)


def code_output(result: ExecutionResult) -> str:
    """What the original's IPython cell showed: prints, the last value, then the error."""
    text = result.stdout
    if result.value is not None and result.value != "None":
        text += result.value + "\n"
    if result.error is not None:
        error = result.error
        text += error.traceback.rstrip("\n") + "\n" if error.traceback else f"{error.type}: {error.message}\n"
    if text == "":
        return NO_OUTPUT
    return _truncate(text)


def as_observed(output: str) -> Any:
    """The original read a code action's output back as a Python literal when it was one."""
    try:
        return ast.literal_eval(output.strip())
    except Exception:
        return output


def default_sandbox(tools: ToolSet, timeout: float = ACTION_TIMEOUT_S) -> Interpreter:
    """A `codeact.Sandbox` with the task's host tools and a per-action timeout (30 s originally)."""
    from codeact.sandbox import Sandbox

    return Sandbox(tools.host_tools(), timeout=timeout)


# --- episodes --------------------------------------------------------------------------------------
@dataclass
class Turn:
    """One model reply and what the harness did with it."""

    reply: str
    kind: str
    content: str
    observation: str | None = None
    correct: bool | None = None
    lm_s: float = 0.0
    action_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Episode:
    """One task run in one mode.

    `end_reason`: correct, limit (turns ran out), context_limit, lm_error or sandbox_error.
    """

    task: str
    category: str
    mode: str
    model: str
    correct: bool
    turns: int
    end_reason: str
    expected: str
    answer: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    messages: list[dict[str, str]] = field(default_factory=list)
    steps: list[Turn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CodeSession:
    """The code-mode REPL of one episode, started on the first action like the original's."""

    def __init__(self, tools: ToolSet, factory: SandboxFactory, timeout: float) -> None:
        self.tools = tools
        self.factory = factory
        self.timeout = timeout
        self.sandbox: Interpreter | None = None

    def run(self, code: str) -> str:
        if self.sandbox is None:
            sandbox = self.factory(self.tools, self.timeout)
            sandbox.start()
            self.sandbox = sandbox
        result = self.sandbox.execute(code, timeout=self.timeout)
        if result.error is not None and result.error.type in _SESSION_LOST:
            self.close()
        return code_output(result)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None


def run_episode(
    task: Task,
    lm: LM,
    mode: Mode,
    *,
    max_turns: int = MAX_TURNS,
    max_tokens: int = MAX_NEW_TOKENS,
    action_timeout_s: float = ACTION_TIMEOUT_S,
    sandbox_factory: SandboxFactory = default_sandbox,
) -> Episode:
    """Run `task` in action mode `mode` with the paper's protocol; never raises for model,
    tool or sandbox failures (they end up in the episode). A code action that times out or
    crashes its session gets the error as its observation, and the next action runs in a fresh
    session (the tools' state, such as the browser's, lives on the host and is kept)."""
    if mode not in MODES:
        raise ValueError(f"unknown action mode {mode!r}; use one of {', '.join(MODES)}")
    started = time.perf_counter()
    tools = task.make_tools()
    messages: list[Message] = [{"role": "user", "content": task.prompt(mode)}]
    episode = Episode(
        task=task.name,
        category=task.category,
        mode=mode,
        model=getattr(lm, "model", "") or type(lm).__name__,
        correct=False,
        turns=0,
        end_reason="limit",
        expected=task.expected_output_repr,
    )
    session = _CodeSession(tools, sandbox_factory, action_timeout_s) if mode == "code" else None
    try:
        while not episode.correct and episode.turns < max_turns:
            lm_started = time.perf_counter()
            try:
                completion = lm.complete(messages, max_tokens=max_tokens, temperature=0.0)
            except Exception as exc:
                # The original ended an episode whose messages outgrew the model's context
                # with "context_limit"; other model failures are ours to report.
                context = type(exc).__name__ == "LMContextLengthError"
                episode.end_reason = "context_limit" if context else "lm_error"
                episode.error = f"{type(exc).__name__}: {exc}"
                break
            lm_s = time.perf_counter() - lm_started
            reply = trim_reply(completion.text)
            messages.append({"role": "assistant", "content": reply})
            episode.turns += 1
            parsed = parse_reply(reply)
            turn = Turn(
                reply=completion.text,
                kind=parsed.kind,
                content=parsed.content,
                lm_s=lm_s,
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
            )
            episode.steps.append(turn)
            reminder = f"\n*Extra reminder: {parsed.reminder}" if parsed.reminder else ""
            if parsed.kind == "answer":
                episode.answer = parsed.content
                turn.correct = is_correct(parsed.content, task.expected_output)
                if turn.correct:
                    episode.correct = True
                    break
                turn.observation = WRONG_ANSWER + reminder
            elif parsed.kind == "action":
                action_started = time.perf_counter()
                if session is not None:
                    try:
                        observed = as_observed(session.run(parsed.content))
                    except Exception as exc:
                        episode.end_reason = "sandbox_error"
                        episode.error = f"{type(exc).__name__}: {exc}"
                        break
                else:
                    observed = run_call_action(tools, parsed.content, mode)
                turn.action_s = time.perf_counter() - action_started
                turn.observation = str(observed) + reminder
                if task.is_single_tool_task and is_correct(observed, task.expected_output):
                    turn.correct = episode.correct = True
                    messages.append({"role": "user", "content": turn.observation})
                    break
            else:
                turn.observation = parsed.content
            messages.append({"role": "user", "content": turn.observation})
    finally:
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()
    if episode.correct:
        episode.end_reason = "correct"
    episode.messages = [dict(m) for m in messages]
    episode.duration_s = time.perf_counter() - started
    return episode
