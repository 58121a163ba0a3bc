"""The `codeact` command: `run` a task, `report` a trace as HTML, `doctor` the machine, `bench`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from codeact.sandbox.options import SandboxOptions

if TYPE_CHECKING:
    from codeact.live import LiveView
    from codeact.sandbox.driver import ApprovalRequest
    from codeact.signature import Signature
    from codeact.trajectory import RunRecord

EXIT_SUBMITTED = 0
EXIT_NO_ANSWER = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""\
exit status:
  {EXIT_SUBMITTED}    the code submitted an answer that fits the signature
  {EXIT_NO_ANSWER}    no answer was submitted within --max-iters (any fallback answer is still printed)
  {EXIT_USAGE}    bad command line or configuration (tools, signature, model, paths)
  {EXIT_FAILED}    the run failed: the model or the sandbox stopped working
  {EXIT_INTERRUPTED}  interrupted with Ctrl-C (the trace is still written)
"""

TOOLS_HELP = """\
tools:
  --tools FILE.py          the file's TOOLS list (or dict) if it defines one, else every public
                           function defined in the file (not imported into it)
  --tools FILE.py:NAME     the callable NAME in the file, or the list/dict of callables NAME
  --tools package.module[:NAME]   the same for an importable module
  --tools may be given several times.
"""

DEFAULT_SIGNATURE = "task -> answer"


class UsageError(Exception):
    """Bad input from the command line; the message is printed as one line."""


# --- tools -------------------------------------------------------------------------------------


def _is_file_spec(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _split_spec(spec: str) -> tuple[str, str | None]:
    # A Windows drive ("C:\\x.py") is not an attribute separator.
    head, sep, attr = spec.rpartition(":")
    if not sep or not head or "/" in attr or "\\" in attr or (len(head) == 1 and head.isalpha()):
        return spec, None
    return head, attr


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"tools file not found: {path}")
    name = f"codeact_tools_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load tools from {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        raise UsageError(f"tools file {path} called sys.exit({exc.code!r}) while loading") from None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UsageError(f"tools file {path} failed to load: {type(exc).__name__}: {exc}") from None
    return module


def _import_module(name: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:  # the `codeact` script does not add it
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise UsageError(
                f"tools module {name!r} not found (give a file path ending in .py, or a module "
                "importable from the current directory)"
            ) from None
        raise UsageError(f"tools module {name!r} failed to import: {exc}") from None
    except Exception as exc:
        raise UsageError(f"tools module {name!r} failed to import: {type(exc).__name__}: {exc}") from None


def _callables_in(value: Any, where: str) -> list[Any]:
    from codeact.tools import Tool

    if isinstance(value, Tool) or callable(value):
        return [value]
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise UsageError(f"{where} is a {type(value).__name__}, not a callable or a list of callables")
    for item in items:
        if not (isinstance(item, Tool) or callable(item)):
            raise UsageError(f"{where} holds {item!r}, which is a {type(item).__name__}, not a callable")
    return items


def _public_functions(module: ModuleType) -> list[Any]:
    from codeact.tools import Tool

    found: list[Any] = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        defined_here = inspect.isfunction(value) and value.__module__ == module.__name__
        if isinstance(value, Tool) or defined_here:
            found.append(value)
    return found


def load_tools(specs: Sequence[str]) -> list[Any]:
    """`Tool`s for `--tools` specs (see TOOLS_HELP); raises `UsageError` saying what is wrong."""
    from codeact.tools import Tool, as_tool

    tools: list[Tool] = []
    seen: dict[str, str] = {}
    for spec in specs:
        target, attr = _split_spec(spec)
        module = _import_file(Path(target)) if _is_file_spec(target) else _import_module(target)
        if attr is not None:
            if not hasattr(module, attr):
                raise UsageError(f"{target} has no attribute {attr!r} (from --tools {spec})")
            items = _callables_in(getattr(module, attr), f"{target}:{attr}")
        elif hasattr(module, "TOOLS"):
            items = _callables_in(module.TOOLS, f"{target}:TOOLS")
        else:
            items = _public_functions(module)
            if not items:
                raise UsageError(f"{target} defines no public functions and no TOOLS list; nothing to use as tools")
        for item in items:
            try:
                made = as_tool(item)
            except Exception as exc:
                raise UsageError(f"cannot use {item!r} from {spec} as a tool: {exc}") from None
            if made.name in seen:
                raise UsageError(f"two tools are named {made.name!r} (from {seen[made.name]} and {spec}); rename one")
            seen[made.name] = spec
            tools.append(made)
    return tools


# --- run ---------------------------------------------------------------------------------------


def _parse_signature(text: str, instructions: str | None) -> Signature:
    from codeact.signature import Signature, SignatureError

    try:
        return Signature(text, instructions=instructions)
    except SignatureError as exc:
        raise UsageError(f"bad --signature: {exc}") from None


def _input_value(signature: Signature, name: str, raw: str) -> Any:
    """An --input value: `@FILE` reads it from a file."""
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read input {name!r} from {path}: {exc.strerror}") from None
    return _typed(signature, name, raw)


def _typed(signature: Signature, name: str, raw: str) -> Any:
    """Text for a str input, else the JSON it spells (or the text when it is no JSON)."""
    if signature.inputs[name].annotation is str:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _inputs(signature: Signature, task: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    names = list(signature.inputs)
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise UsageError(f"--input {pair!r} should be NAME=VALUE")
        if name not in signature.inputs:
            raise UsageError(
                f"--input {name!r} is not an input of the signature {signature.text()!r} "
                f"(its inputs: {', '.join(names) or 'none'})"
            )
        values[name] = _input_value(signature, name, raw)
    if task is not None:
        missing = [n for n in names if n not in values]
        if len(missing) != 1:
            raise UsageError(
                f"the signature {signature.text()!r} takes inputs {', '.join(names) or '(none)'}; "
                "give them with --input NAME=VALUE instead of a TASK argument"
            )
        values[missing[0]] = _typed(signature, missing[0], task)  # the task is text: "@..." is no file
    missing = [n for n in names if n not in values]
    if missing:
        raise UsageError(f"missing input {', '.join(missing)}: give TASK or --input NAME=VALUE")
    try:
        return signature.validate_inputs(values)
    except TypeError as exc:
        raise UsageError(str(exc)) from None


def _resolve_model(requested: str | None) -> Any:
    from codeact.lm.base import LM
    from codeact.lm.default import default_model

    model = requested
    if not model:
        try:
            model = default_model()
        except Exception as exc:
            raise UsageError(f"no model configured: {exc}") from None
    if not model:
        raise UsageError(
            "no model configured: pass --model (e.g. openai/gpt-4o-mini, local, "
            "scripted:replies.json) or set CODEACT_MODEL"
        )
    try:
        lm = LM(model)
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot use model {model!r}: {message}") from None
    problem = lm.configuration_problem()
    if problem is not None:  # nothing was sent: say what to fix before the run starts
        raise UsageError(problem)
    return lm


def _memory(text: str) -> str:
    try:
        SandboxOptions(memory_limit=text.strip())
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


class _TerminalApprover:
    """`codeact run --approve`: asks at the terminal before each tool call the code makes."""

    def __init__(self, view: LiveView) -> None:
        self.view = view
        self.always: set[str] = set()

    def __call__(self, request: ApprovalRequest) -> bool | str:
        from rich.text import Text

        from codeact.live import safe

        if request.tool in self.always:
            return True
        arguments = ", ".join(f"{k}={v!r}" for k, v in request.arguments.items())
        question = Text.assemble(
            ("the code calls ", "bold yellow"),
            (safe(f"{request.tool}({arguments})"), "cyan"),
            ("  allow? y = yes, n = no, a = always for this tool", "yellow"),
        )
        answer = self.view.ask(question, "yna")
        if answer == "a":
            self.always.add(request.tool)
        return True if answer in "ya" else "refused at the terminal"


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


_count = _whole_number(0)
_positive_int = _whole_number(1)


def _existing_paths(paths: Sequence[str], option: str) -> list[str]:
    for path in paths:
        if not Path(path).exists():
            raise UsageError(f"{option} {path}: no such file or folder")
    return [str(Path(p).resolve()) for p in paths]


def _check_backend(backend: str) -> None:
    from codeact.sandbox import available_backends

    available = available_backends()
    if backend == "auto" and not available:
        raise UsageError("no sandbox backend works on this machine; run `codeact doctor` for why")
    if backend != "auto" and backend not in available:
        raise UsageError(
            f"the {backend} sandbox backend is not available here (available: "
            f"{', '.join(available) or 'none'}); run `codeact doctor` for what to install"
        )


def _exit_status(end_reason: str, submitted: bool) -> int:
    if end_reason == "interrupted":
        return EXIT_INTERRUPTED
    if end_reason == "submitted" and submitted:
        return EXIT_SUBMITTED
    if end_reason in ("max_iters", "budget"):
        return EXIT_NO_ANSWER
    return EXIT_FAILED


def _write_outputs(record: RunRecord, args: argparse.Namespace) -> list[str]:
    """Write --trace and --report; return problems (never raise: the run's result matters more)."""
    problems: list[str] = []
    if args.trace:
        try:
            record.save(args.trace)
        except OSError as exc:
            problems.append(f"cannot write trace {args.trace}: {exc.strerror or exc}")
    if args.report:
        from codeact.report import write_report

        try:
            write_report(record, args.report)
        except OSError as exc:
            problems.append(f"cannot write report {args.report}: {exc.strerror or exc}")
    return problems


def _summary_json(record: RunRecord, args: argparse.Namespace) -> str:
    from dataclasses import asdict

    from codeact.trajectory import jsonable

    return json.dumps(
        jsonable(
            {
                "outputs": record.outputs,
                "end_reason": record.end_reason,
                "error": record.error,
                "fallback": record.fallback,
                "steps": len(record.steps),
                "max_iters": record.max_iters,
                "model": record.model,
                "usage": asdict(record.usage),
                "duration_s": round(record.duration_s, 4),
                "lm_s": round(record.lm_s, 4),
                "exec_s": round(record.exec_s, 4),
                "tool_s": round(record.tool_s, 4),
                "trace": args.trace,
                "report": args.report,
            }
        ),
        ensure_ascii=False,
        allow_nan=False,
    )


def _interrupt_once(signum: int, frame: Any) -> None:
    """First Ctrl-C stops the run; later ones are ignored so the cleanup and the trace finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:

    signature = _parse_signature(args.signature, args.instructions)
    inputs = _inputs(signature, args.task, args.input)
    tools = load_tools(args.tools)
    sandbox_options = _sandbox_options(args)
    lm = _resolve_model(args.model)
    with contextlib.ExitStack() as mcp_sessions:
        tools += _mcp_tools(args.mcp, mcp_sessions)
        return _run(args, signature, inputs, tools, sandbox_options, lm)


def _run(
    args: argparse.Namespace,
    signature: Signature,
    inputs: dict[str, Any],
    tools: list[Any],
    sandbox_options: SandboxOptions,
    lm: Any,
) -> int:
    from rich.console import Console
    from rich.markup import escape

    from codeact.agent import CodeAct
    from codeact.live import LiveView, format_value, print_result
    from codeact.prediction import MaxItersError, RunInterrupted

    console = Console(highlight=False)
    quiet = args.json or args.quiet
    view = LiveView(console, show=not quiet)
    try:
        agent = CodeAct(
            signature,
            tools,
            lm=lm,
            max_iters=args.max_iters,
            sandbox=sandbox_options,
            on_event=view,
            approve=_TerminalApprover(view) if args.approve else None,
            max_tool_calls=args.max_tool_calls,
            max_run_tokens=args.max_run_tokens,
            max_cost=args.max_cost,
            max_reply_tokens=args.max_reply_tokens,
            temperature=args.temperature,
            fallback=args.fallback,
            action_format=args.action_format,
            step_samples=args.step_samples,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None

    previous = signal.signal(signal.SIGINT, _interrupt_once)
    try:
        try:
            record = agent(**inputs).record
        except RunInterrupted as exc:
            record = exc.prediction.record
        except MaxItersError as exc:
            record = exc.prediction.record
        except KeyboardInterrupt:  # before the run began, or after it ended
            if view.record is None:
                view.stop()
                print("codeact: interrupted before the run began", file=sys.stderr)
                return EXIT_INTERRUPTED
            record = view.record
        view.stop()
        problems = _write_outputs(record, args)
    finally:
        signal.signal(signal.SIGINT, previous)

    submitted = record.end_reason == "submitted" and record.outputs is not None
    if args.json:
        print(_summary_json(record, args), flush=True)
    elif args.quiet:
        if record.outputs is not None:
            values = list(record.outputs.values())
            text = format_value(values[0]) if len(values) == 1 else format_value(record.outputs)
            print(text, flush=True)
    else:
        print_result(console, record)
        for label, path in (("trace", args.trace), ("report", args.report)):
            if path and not any(path in p for p in problems):
                console.print(f"[dim]{label}:[/] {escape(path)}")
    if (args.json or args.quiet) and record.error:
        print(f"codeact: run ended ({record.end_reason}): {record.error}", file=sys.stderr)
    for problem in problems:
        print(f"codeact: error: {problem}", file=sys.stderr)
    if problems:  # the run's answer is out, but what was asked to be written was not
        return EXIT_FAILED
    return _exit_status(record.end_reason, submitted)


# --- report ------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from codeact.report import write_report
    from codeact.trajectory import RunRecord

    trace = Path(args.trace)
    if not trace.is_file():
        raise UsageError(f"trace file not found: {trace}")
    try:
        record = RunRecord.load(trace)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{trace} is not a codeact trace: {exc}") from None
    output = Path(args.output) if args.output else trace.with_suffix(".html")
    try:
        write_report(record, output)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise UsageError(f"{trace} holds fields of the wrong type ({type(exc).__name__}: {exc})") from None
    print(output)
    return 0


# --- doctor ------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    from codeact.doctor import print_report, run_checks

    checks = run_checks(model=args.model, ask_lm=not args.no_lm)
    return print_report(checks, as_json=args.json)


# --- bench -------------------------------------------------------------------------------------


def _bench_dir() -> Path | None:
    candidates = [Path.cwd() / "bench", Path(__file__).resolve().parents[2] / "bench"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    return None


def _bench_scripts() -> dict[str, Path]:
    folder = _bench_dir()
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")}


def cmd_bench(args: argparse.Namespace) -> int:
    if args.name == "m3tooleval":
        try:
            from codeact.m3tooleval import cli as m3cli
        except ImportError as exc:
            raise UsageError(f"the M3ToolEval benchmark is not available: {exc}") from None
        sub = argparse.ArgumentParser(prog="codeact bench m3tooleval", description="Run the M3ToolEval benchmark.")
        m3cli.add_arguments(sub)
        return int(m3cli.main(sub.parse_args(args.rest)) or 0)
    scripts = _bench_scripts()
    if args.name is not None:
        if args.name not in scripts:
            known = ", ".join(["m3tooleval", *scripts]) or "none found"
            raise UsageError(f"unknown benchmark {args.name!r} (available: {known})")
        selected = {args.name: scripts[args.name]}
    else:
        if args.rest:
            raise UsageError("extra arguments are only passed on to a named benchmark")
        selected = scripts
    if not selected:
        raise UsageError(
            "no benchmark scripts found: run `codeact bench` from the codeact source folder "
            "(it runs bench/*.py), or name one: codeact bench m3tooleval"
        )
    status = 0
    for name, script in selected.items():
        print(f"== {name} ({script})", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *args.rest])
        elapsed = time.perf_counter() - started
        if code != 0:
            print(f"== {name} failed with exit status {code} after {elapsed:.1f} s", flush=True)
            status = 1
        else:
            print(f"== {name} done in {elapsed:.1f} s\n", flush=True)
    if args.name is None and importlib.util.find_spec("codeact.m3tooleval") is not None:
        print("M3ToolEval needs a model: codeact bench m3tooleval --model MODEL (--help for more)")
    return status


# --- parser ------------------------------------------------------------------------------------


def _add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    sandbox = parser.add_argument_group("sandbox")
    sandbox.add_argument(
        "--read", action="append", default=[], metavar="PATH", help="a file or folder the code may read; repeatable"
    )
    sandbox.add_argument(
        "--write", action="append", default=[], metavar="PATH", help="a file or folder the code may write; repeatable"
    )
    sandbox.add_argument(
        "--network",
        action="append",
        nargs="?",
        const=True,
        default=[],
        metavar="HOST",
        help="let the code reach HOST (like api.example.com, *.github.com:443 or 10.0.0.5:8080) "
        "through codeact's proxy; repeatable; without HOST any public host (default: no network)",
    )
    sandbox.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="time limit for each code execution (default: 30)",
    )
    sandbox.add_argument(
        "--memory",
        type=_memory,
        default="1GB",
        metavar="SIZE",
        help="memory limit of the sandbox, e.g. 512MB, 2GB (default: 1GB)",
    )
    sandbox.add_argument(
        "--backend", choices=["auto", "process", "pyodide"], default="auto", help="sandbox backend (default: auto)"
    )
    sandbox.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module to import once in the zygote, so each session starts with it; repeatable",
    )
    sandbox.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="a package the code may import, installed with pip into a cache of its own "
        "(not this environment), e.g. 'tabulate==0.9.*'; repeatable",
    )


def _sandbox_options(args: argparse.Namespace) -> SandboxOptions:
    read_paths = _existing_paths(args.read, "--read")
    write_paths = _existing_paths(args.write, "--write")
    _check_backend(args.backend)
    try:
        return SandboxOptions(
            backend=args.backend,
            read_paths=read_paths,
            write_paths=write_paths,
            network=_network(args.network),
            timeout=args.timeout,
            memory_limit=args.memory,
            packages=args.package,
            preload=args.preload,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def _network(values: list[str | bool]) -> bool | list[str]:
    """`--network` alone opens the public network; `--network HOST` (repeated) allows those hosts."""
    hosts = [v for v in values if isinstance(v, str)]
    if hosts and True in values:
        raise UsageError("--network without a host opens every public host; give hosts or none, not both")
    return hosts or bool(values)


def _mcp_tools(commands: Sequence[str], stack: contextlib.ExitStack) -> list[Any]:
    """The tools of each MCP server in `commands`; their sessions close with `stack`."""
    if not commands:
        return []
    try:
        from codeact import mcp
    except ImportError as exc:
        raise UsageError(f"--mcp needs the MCP extra: pip install 'codeact[mcp]' ({exc})") from None
    found: list[Any] = []
    for command in commands:
        try:
            found.extend(stack.enter_context(mcp.tools(command)))
        except Exception as exc:
            raise UsageError(f"--mcp {command}: could not connect: {type(exc).__name__}: {exc}") from None
    return found


def cmd_mcp_serve(args: argparse.Namespace) -> int:
    from codeact import mcp

    options = _sandbox_options(args)
    with contextlib.ExitStack() as stack:
        tools = load_tools(args.tools) + _mcp_tools(args.mcp, stack)
        try:
            app = mcp.server(tools, options=options)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        mcp.serve(app)
    return EXIT_SUBMITTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeact",
        description="Language models that solve tasks by writing and running Python in a sandbox.",
    )
    parser.add_argument("--version", action="version", version=f"codeact {version('codeact')}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs.required = True

    run = subs.add_parser(
        "run",
        help="solve a task with a model writing Python",
        description="Solve TASK: the model writes Python that runs in a sandbox, with your tools "
        "callable from it, until the code calls submit(...).",
        epilog=EXIT_CODES_HELP + "\n" + TOOLS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("task", nargs="?", help="the task; it fills the signature's one missing input")
    run.add_argument(
        "--model",
        "-m",
        help="model name: openai/MODEL, anthropic/MODEL, local, scripted:REPLIES.json "
        "(default: $CODEACT_MODEL, else a hosted model whose API key is set, else local)",
    )
    run.add_argument(
        "--tools",
        "-t",
        action="append",
        default=[],
        metavar="SPEC",
        help="tools to offer the model (see 'tools' below); repeatable",
    )
    run.add_argument(
        "--signature",
        "-s",
        default=DEFAULT_SIGNATURE,
        help=f"inputs and typed outputs, e.g. 'question -> answer: int' (default: '{DEFAULT_SIGNATURE}')",
    )
    run.add_argument("--instructions", help="instructions for the model, beyond the signature")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input of the signature; VALUE is JSON for non-str types, @FILE reads it from a file; repeatable",
    )
    run.add_argument(
        "--max-iters",
        type=_positive_int,
        default=10,
        metavar="N",
        help="most model-code-observation steps (default: 10)",
    )
    run.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="COMMAND",
        help="an MCP server whose tools to offer (a command that speaks MCP on stdio, or an http(s) URL); repeatable",
    )
    run.add_argument(
        "--approve",
        action="store_true",
        help="ask in the terminal before each tool call the code makes (y = yes, n = no, "
        "a = always for that tool); a refused call raises PermissionError in the code",
    )
    run.add_argument(
        "--max-tool-calls",
        type=_count,
        default=None,
        metavar="N",
        help="the most tool calls the code may make in the run",
    )
    run.add_argument(
        "--max-run-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="the run's token budget, all model calls together; the run ends when it is spent",
    )
    run.add_argument(
        "--max-reply-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="the most tokens one model reply may have",
    )
    run.add_argument(
        "--max-cost",
        type=_positive_float,
        default=None,
        metavar="DOLLARS",
        help="the run's budget in dollars (for models whose price codeact knows)",
    )
    run.add_argument("--temperature", type=float, default=None, metavar="T", help="the model's sampling temperature")
    run.add_argument(
        "--fallback",
        choices=["extract", "partial", "raise"],
        default="extract",
        help="when no step submitted: extract the answer with one more model call (default), "
        "keep what validated (partial), or fail (raise)",
    )
    run.add_argument(
        "--action-format",
        choices=["fenced", "tool_call"],
        default="fenced",
        help="how the model hands over its code: a ```python block (default) or a run_python(code=...) "
        "function call (for models trained for tool calling)",
    )
    run.add_argument(
        "--step-samples",
        type=_positive_int,
        default=1,
        metavar="N",
        help="when a step's code fails, try up to N-1 more replies from the state before it (native sandbox)",
    )
    _add_sandbox_arguments(run)
    output = run.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print one JSON object with the outputs, end reason and usage"
    )
    output.add_argument("--quiet", "-q", action="store_true", help="print only the answer")
    output.add_argument("--report", metavar="FILE.html", help="write an HTML report of the run")
    output.add_argument("--trace", metavar="FILE.json", help="write the run record as JSON")
    run.set_defaults(handler=cmd_run)

    report = subs.add_parser(
        "report",
        help="turn a trace (from --trace) into an HTML page",
        description="Write a self-contained HTML report of a run trace.",
    )
    report.add_argument("trace", metavar="TRACE.json")
    report.add_argument("-o", "--output", metavar="FILE.html", help="where to write the page (default: TRACE.html)")
    report.set_defaults(handler=cmd_report)

    doctor = subs.add_parser(
        "doctor",
        help="check the sandbox, backends, model and extras on this machine",
        description="Check what codeact can use on this machine and say what to do about what is "
        "missing. Exit status 0 when a sandbox backend and the model work, 1 otherwise.",
    )
    doctor.add_argument("--model", "-m", help="the model to check (default: the configured one)")
    doctor.add_argument("--no-lm", action="store_true", help="do not send a test request to the model")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(handler=cmd_doctor)

    mcp = subs.add_parser(
        "mcp", help="codeact and MCP: serve a code-mode MCP server", description="Model Context Protocol commands."
    )
    mcp_subs = mcp.add_subparsers(dest="mcp_command", metavar="COMMAND")
    mcp_subs.required = True
    serve = mcp_subs.add_parser(
        "serve",
        help="serve run_python(code) over stdio, with your tools callable from the code",
        description="Serve one MCP tool, run_python(code), that runs code in a persistent codeact sandbox "
        "where the given tools (and other MCP servers' tools) are callable; list_functions() shows them.",
        epilog=TOOLS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--tools",
        "-t",
        action="append",
        default=[],
        metavar="SPEC",
        help="tools callable from the code (see 'tools' below); repeatable",
    )
    serve.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="COMMAND",
        help="an MCP server whose tools are callable from the code; repeatable",
    )
    _add_sandbox_arguments(serve)
    serve.set_defaults(handler=cmd_mcp_serve)

    bench = subs.add_parser(
        "bench",
        help="run the benchmarks and print their tables",
        description="Run the project's benchmark scripts (bench/*.py), or one by name; "
        "'codeact bench m3tooleval --help' shows the M3ToolEval options.",
    )
    bench.add_argument("name", nargs="?", help="one benchmark: m3tooleval or a bench/NAME.py script")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for that benchmark")
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"codeact: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("codeact: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return EXIT_FAILED
