"""What the model reads and what is taken from what it writes.

`Prompt` builds the chat messages from the signature, the tools, the inputs and the trajectory;
`parse_reply` takes the reasoning and code out of a reply; `observation` turns an execution result
into the text the model sees next.
"""

from __future__ import annotations

import ast
import json
import os
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from codeact.lm.base import Completion, Message
from codeact.sandbox.options import SandboxOptions
from codeact.signature import Signature
from codeact.tools import Tool, record_source, record_types
from codeact.trajectory import Step, jsonable

# Stop before the model writes an observation of its own.
STOP_SEQUENCES: tuple[str, ...] = ("\nObservation:", "\n<observation>", "\n```output", "\nOutput:")

# How the model hands over its code: a fenced block in the reply, or the argument of a call of the
# function `run_python` (for models trained for tool calling); both end up in the same step record.
ActionFormat = Literal["fenced", "tool_call"]
ACTION_FORMATS: tuple[str, ...] = ("fenced", "tool_call")
RUN_PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "run_python",
        "description": "Run Python code in the sandbox session and get its output; variables persist.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "the Python code to run"}},
            "required": ["code"],
        },
    },
}
RUN_PYTHON_CHOICE: dict[str, Any] = {"type": "function", "function": {"name": "run_python"}}

NO_CODE_OBSERVATION = (
    "Your reply had no code to run. Reply with your reasoning and one ```python code block; "
    "call submit(...) in the code when you have the answer."
)

_INTRO = "You solve the task by writing Python code that runs in a sandbox session."
_FENCED_RULE = (
    "- Each reply: brief reasoning, then one ```python code block. Stop after the block; you will get its output. "
    "(Several blocks in one reply run joined, in order.)"
)
_TOOL_CALL_RULE = (
    "- Each reply: brief reasoning, then call the run_python function with your code; you will get its output."
)
_COMMON_RULES = """\
- Variables, imports and functions persist between steps. The inputs are already defined as variables.
- Print what you need to see; the value of a final bare expression is shown too. Long output is cut.
- Call the functions below directly; they return Python values.
- When you have the result, call submit(...) in code. It validates the types and ends the task."""
_EXAMPLE = """\
Example reply:
The total is the sum of the two numbers.
```python
total = sum([2, 3])
print(total)
submit(total)
```"""
_RULES = f"{_INTRO}\n{_FENCED_RULE}\n{_COMMON_RULES}\n\n{_EXAMPLE}"
_TOOL_CALL_RULES = f"{_INTRO}\n{_TOOL_CALL_RULE}\n{_COMMON_RULES}"


# The reply format as a GBNF grammar, for models whose server can hold decoding to one (llama.cpp):
# a line of reasoning, then one short python block (at most four lines) whose last line calls submit(...).
REPLY_GRAMMAR = r"""
root   ::= prose "```python\n" (line (line (line (line)?)?)?)? submit "```"
prose  ::= [^`\n]+ "\n"
line   ::= [^`\n]+ "\n"
submit ::= "submit(" [^`\n]* ")\n"
"""

_ASYNC_NOTE = (
    "Every function above can also be awaited, and top-level `await` works: "
    "`results = await asyncio.gather(*[f(x) for x in items])` runs the calls at the same time. "
    "In a step that uses `await` anywhere, and inside `async def`, a call gives an awaitable: "
    "await it to get its value."
)


@dataclass
class ParsedReply:
    """A model reply split into prose (`reasoning`) and the `code` to run (None when there is none)."""

    reasoning: str
    code: str | None
    blocks: list[str] = field(default_factory=list)


# --- parsing replies ----------------------------------------------------------------------------
_CODE_LANGS = frozenset({"", "python", "py", "python3", "py3", "ipython", "python3.11", "tool_code"})
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[ \t]*(?P<rest>.*)$")
_TAG = re.compile(r"<(?P<tag>code|execute|python)>", re.IGNORECASE)
_LANGUAGE = re.compile(r"[A-Za-z][\w.+#-]*")  # a fence's language tag (a closing fence has none)
_LABEL = re.compile(r"[\w./\\-]+\.\w+")  # a file name after the language
_END_MARK = "<end_code>"


def parse_action(completion: Completion, reply: str) -> tuple[str, str | None, str | None]:
    """(reasoning, code, problem) of a model reply: the code of a `run_python` call when the model
    made one, else the code in the reply's text. `problem` says what was wrong with a call whose
    arguments were not JSON with a `code` string (the code is then None). Never raises."""
    call = next((c for c in completion.tool_calls if c.name == "run_python"), None)
    if call is None:
        parsed = parse_reply(reply)
        return parsed.reasoning, parsed.code, None
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError as exc:
        arguments = {"error": str(exc)}
    code = arguments.get("code") if isinstance(arguments, dict) else None
    thoughts, text = _split_thinking(reply.replace("\r\n", "\n"))
    reasoning = "\n".join(p for p in (thoughts, text.strip()) if p)
    if not isinstance(code, str) or not code.strip():
        return (
            reasoning,
            None,
            ('Your run_python call had no code: call run_python with a JSON object like {"code": "print(1 + 1)"}.'),
        )
    return reasoning, code, None


def parse_reply(text: str) -> ParsedReply:
    """Reasoning and code from a model reply. Never raises.

    Code is taken from ```` ```python ````/```` ```py ````/bare fences and `<code>`/`<execute>` tags;
    several blocks are joined in order; a block missing its closing fence runs to the end of the
    reply. Without any block, a reply that is entirely valid Python statements is taken as code.
    """
    text = text.replace("\r\n", "\n").replace(_END_MARK, "")
    thoughts, text = _split_thinking(text)
    parsed = _parse_answer(text)
    if thoughts:  # code drafted while thinking never runs; the thinking is kept as reasoning
        parsed.reasoning = "\n".join(p for p in (thoughts, parsed.reasoning) if p)
    return parsed


_THINK = re.compile(r"<(think|thinking|reasoning)>(.*?)(?:</\1>|\Z)", re.IGNORECASE | re.DOTALL)
_THINK_END = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)


def _split_thinking(text: str) -> tuple[str, str]:
    """The reasoning inside <think>/<thinking> tags (a lone closing tag ends reasoning that began
    without its opening tag), and the answer outside them."""
    thoughts: list[str] = []
    first_open = _THINK.search(text)
    lone_close = _THINK_END.search(text)
    if lone_close and (first_open is None or lone_close.start() < first_open.start()):
        thoughts.append(text[: lone_close.start()].strip())
        text = text[lone_close.end() :]
    thoughts += [m.group(2).strip() for m in _THINK.finditer(text)]
    return "\n".join(t for t in thoughts if t), _THINK.sub("", text)


def _parse_answer(text: str) -> ParsedReply:
    fenced, prose = _fenced_blocks(text)
    # bare fences beside python blocks hold output the model imagined, not code
    any_labeled = any(labeled for labeled, _ in fenced)
    blocks = [body for labeled, body in fenced if labeled or not any_labeled]
    if not blocks:
        blocks, prose = _tagged_blocks(text)
    if not blocks and _looks_like_code(text):
        return ParsedReply(reasoning="", code=text.strip("\n"), blocks=[text.strip("\n")])
    blocks = [b for b in blocks if b.strip()]
    code = "\n\n".join(blocks) if blocks else None
    reasoning = "\n".join(p.strip("\n") for p in prose if p.strip()).strip()
    return ParsedReply(reasoning=reasoning, code=code, blocks=blocks)


def _fenced_blocks(text: str) -> tuple[list[tuple[bool, str]], list[str]]:
    """Code blocks, each marked whether its fence names a language, and the prose around them."""
    lines = text.split("\n")
    blocks: list[tuple[bool, str]] = []
    prose: list[str] = []
    outside: list[str] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            outside.append(lines[i])
            i += 1
            continue
        fence, lang, rest = match["fence"], match["lang"].lower(), match["rest"]
        # A one-line block: ```python x = 1```
        if rest.endswith(fence[0] * 3) and lang in _CODE_LANGS:
            body = rest.rstrip(fence[0]).strip()
            blocks.append((bool(lang), body))
            prose.append("\n".join(outside))
            outside = []
            i += 1
            continue
        # text after the language is code ("```python x = 1") unless it is a label ("```python main.py")
        body_lines: list[str] = [rest] if rest and lang in _CODE_LANGS and not _LABEL.fullmatch(rest) else []
        j = i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not _LANGUAGE.fullmatch(close["lang"])  # "```", "```.", "```<|im_end|>" all close
            ):
                break
            body_lines.append(lines[j])
            j += 1
        body = textwrap.dedent("\n".join(body_lines)).strip("\n")
        body = "\n".join(line.rstrip() for line in body.split("\n"))
        if lang in _CODE_LANGS:
            blocks.append((bool(lang), body))
            prose.append("\n".join(outside))
            outside = []
        else:
            outside.extend(lines[i : j + 1])
        i = j + 1
    prose.append("\n".join(outside))
    return blocks, prose


def _tagged_blocks(text: str) -> tuple[list[str], list[str]]:
    blocks: list[str] = []
    prose: list[str] = []
    pos = 0
    while True:
        match = _TAG.search(text, pos)
        if not match:
            break
        prose.append(text[pos : match.start()])
        closing = re.compile(rf"</{match['tag']}>", re.IGNORECASE).search(text, match.end())
        end = closing.start() if closing else len(text)
        body = textwrap.dedent(text[match.end() : end]).strip("\n")
        blocks.append("\n".join(line.rstrip() for line in body.split("\n")))
        pos = closing.end() if closing else len(text)
    prose.append(text[pos:])
    return blocks, prose


def _looks_like_code(text: str) -> bool:
    stripped = text.strip()
    if not stripped or ("\n" not in stripped and " " not in stripped and "(" not in stripped):
        return False
    try:
        tree = ast.parse(stripped)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant, ast.Name))) for node in tree.body
    )


# --- observations -------------------------------------------------------------------------------
def cut(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head and tail around a marker."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    head, tail = text[:half], text[-half:]
    # Prefer whole lines when a line break is near the cut.
    nl = head.rfind("\n")
    if nl > half * 0.8:
        head = head[: nl + 1]
    nl = tail.find("\n")
    if 0 <= nl < half * 0.2:
        tail = tail[nl + 1 :]
    omitted = len(text) - len(head) - len(tail)
    return f"{head}\n[... {omitted:,} characters cut; print a smaller part to see them ...]\n{tail}"


def observation(step: Step, *, limit: int = 4000, steps_left: int | None = None) -> str:
    """The text the model sees after `step` ran: prints, last value and error, each cut to fit."""
    parts: list[str] = []
    if step.stdout:
        parts.append("Output:\n" + cut(step.stdout.rstrip("\n"), limit))
    if step.stdout_truncated:
        parts.append(f"[{step.stdout_truncated:,} more characters of output were not kept]")
    if step.stderr:
        parts.append("Stderr:\n" + cut(step.stderr.rstrip("\n"), limit // 2))
    if step.value is not None:
        parts.append("Value: " + cut(step.value, limit // 2))
    if step.error is not None:
        parts.append(_error_text(step, limit))
    if not parts:
        parts.append("(The code ran and printed nothing. Print values to see them.)")
    if steps_left == 1:
        parts.append("This is your last step: call submit(...) with your best answer now.")
    return "\n".join(parts)


def _error_text(step: Step, limit: int) -> str:
    error = step.error
    assert error is not None
    if error.type == "SubmitValidationError":
        return f"submit() was not accepted: {error.message}\nFix those values and call submit again."
    if error.type == "SubmitRejected":
        return f"submit() was rejected by a check: {error.message}\nFix the answer and call submit again."
    where = ""
    if error.lineno is not None:
        where = f" (line {error.lineno}" + (f": {error.line.strip()}" if error.line else "") + ")"
    text = f"Error{where}: {error.type}: {error.message}"
    frames = _step_frames(error.traceback)
    if frames.count('  File "') > 1:
        text += "\nTraceback (most recent call last):\n" + cut(frames, limit // 2)
    return text


def _step_frames(traceback: str) -> str:
    """The frames of a traceback that are in the model's own code (`<step N>`), in order."""
    kept: list[str] = []
    keep = False
    for line in traceback.splitlines():
        if line.startswith('  File "'):
            keep = line.startswith('  File "<step')
        elif not line.startswith("    "):
            keep = False
        if keep:
            # The sandbox numbers its executions, setup included; the model's steps differ.
            kept.append(re.sub(r'^  File "<step \d+>"', '  File "<code>"', line))
    return "\n".join(kept)


# --- messages -----------------------------------------------------------------------------------
class Prompt:
    """Builds the messages for each step of a run; the fixed part is rendered once."""

    def __init__(
        self,
        signature: Signature,
        tools: Sequence[Tool],
        *,
        input_limit: int = 2000,
        sandbox: SandboxOptions | None = None,
        inputs_in_prompt: InputsInPrompt = "full",
        preview_chars: int = 500,
        demos: Sequence[Demo] = (),
        action_format: ActionFormat = "fenced",
    ) -> None:
        self.signature = signature
        self.action_format = action_format
        self.demos = list(demos)
        self.tools = list(tools)
        self.input_limit = input_limit
        self.sandbox = sandbox
        self.input_modes = _input_modes(inputs_in_prompt, signature)
        if isinstance(preview_chars, bool) or not isinstance(preview_chars, int) or preview_chars < 1:
            raise ValueError(f"preview_chars must be a positive integer, got {preview_chars!r}")
        self.preview_chars = preview_chars
        self.refresh()

    def refresh(self) -> None:
        """Build the system prompts again (after the instructions or the demos changed).

        `system` describes the environment too; `brief_system` leaves that out, for a small model
        held to the reply format by a grammar, which does worse the more it reads."""
        self.system = self._system(environment_section=True)
        self.brief_system = self._system(environment_section=False)

    def _system(self, *, environment_section: bool) -> str:
        sections = [_TOOL_CALL_RULES if self.action_format == "tool_call" else _RULES]
        annotations = [a for t in self.tools for a in [*t.annotations.values(), t.return_annotation]]
        # the record types the tools take are defined in the sandbox too (see bridge.definitions)
        stubs = ["@dataclass\n" + record_source(cls).split("\n", 2)[2] for cls in record_types(annotations)]
        stubs += [t.stub() for t in self.tools]
        stubs.append(self.signature.submit_stub())
        sections.append("Functions you can call:\n```python\n" + "\n\n".join(stubs) + "\n```")
        if any(t.is_async for t in self.tools):
            sections.append(_ASYNC_NOTE)
        if self.sandbox is not None and environment_section:
            sections.append(environment(self.sandbox))
        if self.demos:
            sections.append(worked_examples(self.demos))
        return "\n\n".join(sections)

    def task(self, inputs: dict[str, Any]) -> str:
        lines: list[str] = []
        outputs = ", ".join(self.signature.outputs)
        only = next(iter(inputs.values())) if len(inputs) == 1 else None
        if self.signature.instructions:
            lines.append(f"Task: {self.signature.instructions}")
        elif isinstance(only, str) and len(only) <= self.input_limit:
            lines.append(f"Task: {only}")  # a lone text input is the task itself
            lines.append(f"Find {outputs} and submit it.")
        else:
            lines.append(f"Task: from the inputs, find {outputs}.")
        if inputs:
            lines.append("")
            lines.append("Inputs (already defined as variables):")
            for name, value in inputs.items():
                spec = self.signature.inputs.get(name)
                note = f"  # {spec.desc}" if spec and spec.desc else ""
                if self.input_modes.get(name, "full") == "preview":
                    lines.append(f"{name}: {preview(value, self.preview_chars)}{note}")
                else:
                    lines.append(f"{name} = {self.input_text(value)}{note}")
            if "preview" in self.input_modes.values():
                lines.append(
                    "(Only previews of some inputs are shown: read them with code; the variables hold all of it.)"
                )
        return "\n".join(lines)

    def input_text(self, value: Any) -> str:
        text = repr(value)
        if len(text) <= self.input_limit:
            return text
        half = self.input_limit // 2
        return f"{text[:half]} ... [{len(text) - 2 * half:,} characters cut; the variable holds all] ... {text[-half:]}"

    def messages(self, inputs: dict[str, Any], steps: Sequence[Step], *, brief: bool = False) -> list[Message]:
        messages: list[Message] = [
            {"role": "system", "content": self.brief_system if brief else self.system},
            {"role": "user", "content": self.task(inputs)},
        ]
        for step in steps:
            if self.action_format == "tool_call" and step.code is not None:
                call_id = f"call_{step.index + 1}"
                arguments = json.dumps({"code": step.code}, ensure_ascii=False)
                messages.append(
                    {
                        "role": "assistant",
                        "content": step.reasoning,
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "function": {"name": "run_python", "arguments": arguments},
                            }
                        ],
                    }
                )
                messages.append(
                    {"role": "tool", "tool_call_id": call_id, "content": f"Observation:\n{step.observation}"}
                )
                continue
            messages.append({"role": "assistant", "content": step.reply})
            messages.append({"role": "user", "content": f"Observation:\n{step.observation}"})
        return messages

    def extraction_messages(self, inputs: dict[str, Any], steps: Sequence[Step]) -> list[Message]:
        """One request for the outputs as JSON, given everything the run did."""
        schema = json.dumps(self.signature.output_json_schema().get("properties", {}))
        history: list[str] = []
        for step in steps:
            reply = step.reply.strip()
            if step.code is not None and step.code not in reply:  # the code came as a run_python call
                reply = f"{reply}\n```python\n{step.code}\n```".strip()
            history.append(f"--- step {step.index + 1}\n{reply}\nObservation:\n{step.observation}")
        text = (
            f"{self.task(inputs)}\n\nAn agent worked on this task but ran out of steps. "
            f"Its steps:\n\n" + "\n\n".join(history) + "\n\n"
            "From what the steps found, give the outputs as one JSON object with these keys "
            f"(JSON schema of each): {schema}\nReply with the JSON object only."
        )
        return [
            {"role": "system", "content": "You extract a task's answer from a work log as JSON."},
            {"role": "user", "content": text},
        ]


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (fenced or surrounded by prose), or None."""
    candidates = [m.group(1) for m in re.finditer(r"```(?:json)?\s*\n(.*?)(?:```|$)", text, re.S)]
    candidates.append(text)
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in [m.start() for m in re.finditer(r"\{", candidate)][:20]:
            try:
                value, _ = decoder.raw_decode(candidate[start:])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


InputsInPrompt = Literal["full", "preview"] | dict[str, Literal["full", "preview"]]


def _input_modes(setting: InputsInPrompt, signature: Signature) -> dict[str, str]:
    """How each input is shown: whole ("full") or as its type, size and a preview ("preview")."""
    if isinstance(setting, str):
        if setting not in ("full", "preview"):
            raise ValueError(f"inputs_in_prompt must be 'full', 'preview' or a dict of them, got {setting!r}")
        return dict.fromkeys(signature.inputs, setting)
    if not isinstance(setting, dict):
        raise TypeError(f"inputs_in_prompt must be 'full', 'preview' or a dict of them, got {setting!r}")
    unknown = [k for k in setting if k not in signature.inputs]
    if unknown:
        raise ValueError(f"inputs_in_prompt names {unknown[0]!r}, which is not an input of the signature")
    for mode in setting.values():
        if mode not in ("full", "preview"):
            raise ValueError(f"inputs_in_prompt values must be 'full' or 'preview', got {mode!r}")
    return {name: setting.get(name, "full") for name in signature.inputs}


def preview(value: Any, chars: int) -> str:
    """An input as its type, size and first part; small values whole."""
    kind = type(value).__name__
    if kind == "DataFrame" and hasattr(value, "dtypes"):
        columns = ", ".join(f"{c}: {t}" for c, t in list(value.dtypes.astype(str).items())[:30])
        head = value.head(5).to_string()[:chars]
        return f"DataFrame of {len(value):,} rows × {value.shape[1]} columns ({columns}); first rows:\n{head}"
    small = not hasattr(value, "__len__") or len(value) <= chars  # a repr at least as long as the value
    whole = _safe_repr(value) if small else ""
    if whole and len(whole) <= chars:
        return f"{kind} = {whole}"
    if isinstance(value, str):
        return f"str of {len(value):,} characters, {value.count(chr(10)) + 1:,} lines; starts: {value[:chars]!r} …"
    if isinstance(value, dict):
        keys = _safe_repr(list(value)[:20])[:chars]
        return f"dict of {len(value):,} keys; first keys: {keys} …"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)[:5] if not isinstance(value, (set, frozenset)) else sorted(value, key=repr)[:5]
        return f"{kind} of {len(value):,} items; first: {_safe_repr(items)[:chars]} …"
    size = f" of length {len(value):,}" if hasattr(value, "__len__") else ""
    return f"{kind}{size}; starts: {(whole or _safe_repr(value))[:chars]} …"


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<repr failed: {type(exc).__name__}>"


@dataclass
class Demo:
    """A solved example shown to the model: the inputs, the code that solved them, the outputs."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    code: str = ""


def worked_examples(demos: Sequence[Demo]) -> str:
    parts = ["Solved examples of this task:"]
    for i, demo in enumerate(demos, 1):
        shown = ", ".join(f"{k}={_safe_repr(v)[:300]}" for k, v in demo.inputs.items())
        parts.append(f"Example {i}: inputs {shown}")
        if demo.code:
            parts.append(f"```python\n{demo.code}\n```")
        parts.append("Outputs: " + ", ".join(f"{k}={_safe_repr(v)[:300]}" for k, v in demo.outputs.items()))
    return "\n".join(parts)


def environment(options: SandboxOptions) -> str:
    """What the code can reach: the working directory, granted paths, libraries, the network, and
    the time limit of a block."""
    lines = [
        f"Environment: the working directory is {os.getcwd()}; each code block may run for "
        f"{options.timeout:g} s, tool calls included. Variables persist from block to block; threads "
        "and processes a block starts do not outlive it."
    ]
    if options.backend == "pyodide":
        libraries = "the standard library only (Pyodide)"
    else:
        libraries = "the standard library and the packages installed with this Python"
    if options.packages:
        libraries += ", and " + ", ".join(options.packages)
    lines.append(f"You can import {libraries}.")
    if options.read_paths:
        lines.append("Readable paths: " + ", ".join(_shown_path(p) for p in options.read_paths))
    if options.write_paths:
        lines.append("Writable paths: " + ", ".join(_shown_path(p) for p in options.write_paths))
    if options.network is True:
        lines.append("The network reaches public hosts through a proxy (urllib, requests and httpx use it).")
    elif options.network:
        lines.append(
            "The network reaches only " + ", ".join(options.network) + " (through a proxy that urllib, "
            "requests and httpx use)."
        )
    else:
        lines.append("The network is not reachable.")
    return "\n".join(lines)


def _shown_path(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else f"{relative} ({path})"


def input_assignments(inputs: dict[str, Any]) -> str:
    """Python source that defines each input as a variable in the session."""
    lines: list[str] = []
    needs_json = False
    for name, value in inputs.items():
        literal = _literal(value)
        if literal is not None:
            lines.append(f"{name} = {literal}")
        else:
            needs_json = True
            lines.append(f"{name} = __codeact_json.loads({json.dumps(jsonable(value))!r})")
    if needs_json:
        lines.insert(0, "import json as __codeact_json")
        lines.append("del __codeact_json")
    return "\n".join(lines)


def _literal(value: Any) -> str | None:
    if type(value) in (str, int, float, bool, type(None)):
        text = repr(value)
        return text if text not in ("nan", "inf", "-inf") else None
    if type(value) in (list, tuple, dict, set, frozenset):
        text = repr(value)
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        return text
    return None
