"""The paper's protocol: reply parsing, turns, retries, and code actions in the real sandbox."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from codeact import ScriptedLM
from codeact.lm.base import LMError
from codeact.m3tooleval import load_tasks, run_benchmark, run_episode
from codeact.m3tooleval.cli import run as cli_run
from codeact.m3tooleval.harness import (
    BOTH,
    NEITHER,
    NO_OUTPUT,
    WRONG_ANSWER,
    parse_reply,
    trim_reply,
)
from codeact.m3tooleval.solutions import (
    SOLUTIONS,
    action_reply,
    answer_from_last_observation,
    reference_replies,
)

TASKS = {t.name: t for t in load_tasks()}
DECODE = TASKS["message_decoder/full_alien_message_decoding"]  # expected 'fchahcufcu'
TRADE = TASKS["trade_calculator/estimate_final_value"]  # expected 161.25


def _sandbox_available() -> bool:
    try:
        from codeact.sandbox import available_backends
    except ImportError:
        return False
    return "process" in available_backends()


needs_sandbox = pytest.mark.skipif(not _sandbox_available(), reason="codeact.Sandbox not available")


# --- parsing -------------------------------------------------------------------------------------
def test_replies_are_trimmed_after_the_first_action_like_the_original() -> None:
    reply = "Thought: go\nAction: view() End Action\nObservation: made up\nAction: scroll_down()"
    assert trim_reply(reply) == "Thought: go\nAction: view() End Action"
    assert trim_reply("  Answer: 3") == "Answer: 3"
    assert trim_reply("Action: a End Action Thought: more\nAnswer: 4") == "Action: a End Action"


def test_replies_parse_into_answers_actions_and_invalid_ones() -> None:
    assert parse_reply("Thought: done\nAnswer:  42 \n").content == "42"
    action = parse_reply("Action:\nprint(1)\nEnd Action")
    assert (action.kind, action.content) == ("action", "print(1)\n")
    assert parse_reply("Answer: 1 Action: x").content == BOTH
    assert parse_reply("I think it is 42").content == NEITHER
    assert parse_reply("Answer: 1\nAnswer: 2").reminder is not None


# --- JSON and text modes (tools called on the host) -----------------------------------------------
def test_json_mode_calls_tools_and_reports_malformed_actions() -> None:
    lm = ScriptedLM(
        [
            'Action: {"tool": "convert_hex_to_ascii", "args": ["7a686b7a686d666d686b"]} End Action',
            "Action: {tool: oops} End Action",
            'Action: {"tool": "no_such_tool", "args": []} End Action',
            'Action: {"tool": "caesar_decode", "args": ["khahcfcfhz"]} End Action',
            'Action: {"tool": "caesar_decode", "args": ["zhkzhmfmhk"[::-1], 5]} End Action',
            'Action: {"tool": "caesar_decode", "args": ["khmfmhzkhz", 5]} End Action',
            "Answer: fchahcufcu",
        ]
    )
    episode = run_episode(DECODE, lm, "json")
    observations = [s.observation for s in episode.steps]
    assert observations[0] == "zhkzhmfmhk"
    assert observations[1].startswith("Invalid action. You should output a JSON object")
    assert observations[2] == "Cound not find tool with name no_such_tool"
    assert observations[3] == (
        "Failed to execute tool caesar_decode with args ('khahcfcfhz',). "
        "Did you try to invoke more than one tool at a time?"
    )
    assert observations[4].startswith("Invalid action")
    assert observations[5] == "fchahcufcu"
    assert (episode.correct, episode.turns, episode.end_reason) == (True, 7, "correct")


def test_text_mode_splits_on_commas_and_converts_numbers() -> None:
    lm = ScriptedLM(
        [
            "Thought: tariff first. Action: calculate_tariff, 150, 7.5 End Action",
            "Action: estimate_final_value, 150, 11.25 End Action",
            "Answer: 161.25",
        ]
    )
    episode = run_episode(TRADE, lm, "text")
    assert [s.observation for s in episode.steps[:2]] == ["11.25", "161.25"]
    assert (episode.correct, episode.turns) == (True, 3)
    assert episode.messages[0]["content"] == TRADE.prompt("text")


def test_wrong_answers_get_the_original_message_until_ten_turns() -> None:
    lm = ScriptedLM(["Answer: 1"] * 10)
    episode = run_episode(TRADE, lm, "json")
    assert (episode.correct, episode.turns, episode.end_reason) == (False, 10, "limit")
    assert episode.messages[2]["content"] == WRONG_ANSWER
    assert len(lm.history) == 10


def test_a_failing_model_ends_the_episode_without_raising() -> None:
    def fail(messages: object) -> str:
        raise LMError("API down")

    episode = run_episode(TRADE, ScriptedLM(["Answer: 3", fail]), "text")
    assert (episode.correct, episode.turns, episode.end_reason) == (False, 1, "lm_error")
    assert "API down" in (episode.error or "")


# --- code mode through the real sandbox -----------------------------------------------------------
@needs_sandbox
def test_all_82_reference_solutions_solve_their_tasks_in_the_sandbox() -> None:
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        episodes = list(pool.map(lambda t: run_episode(t, ScriptedLM(reference_replies(t)), "code"), TASKS.values()))
    elapsed = time.perf_counter() - started
    print(f"82 reference episodes in {elapsed:.2f} s")
    unsolved = {e.task: e.messages[-1]["content"][-300:] for e in episodes if not e.correct}
    assert unsolved == {}
    assert all(e.turns == len(SOLUTIONS[e.task]) + 1 for e in episodes)
    browsing = [e for e in episodes if e.category == "web_browsing"]
    assert browsing and all(e.turns == 3 for e in browsing)


@needs_sandbox
def test_syntax_error_then_fix_counts_both_turns() -> None:
    lm = ScriptedLM(
        [
            action_reply("print(caesar_decode(reverse_string(convert_hex_to_ascii('7a686b7a686d666d686b'), 5)"),
            action_reply(SOLUTIONS[DECODE.name][0]),
            answer_from_last_observation,
        ]
    )
    episode = run_episode(DECODE, lm, "code")
    assert "SyntaxError" in (episode.steps[0].observation or "")
    assert episode.steps[1].observation == "fchahcufcu\n"
    assert (episode.correct, episode.turns) == (True, 3)


@needs_sandbox
def test_wrong_answer_then_correct_one() -> None:
    lm = ScriptedLM(
        [
            action_reply("x = estimate_final_value(150, calculate_tariff(150, 7.5))\nprint(x)"),
            "Answer: 162",
            "Answer: 161.25",
        ]
    )
    episode = run_episode(TRADE, lm, "code")
    assert [s.correct for s in episode.steps] == [None, False, True]
    assert episode.messages[4]["content"] == WRONG_ANSWER
    assert (episode.correct, episode.turns, episode.answer) == (True, 3, "161.25")


@needs_sandbox
def test_missing_print_gets_the_no_output_message_and_state_persists() -> None:
    lm = ScriptedLM(
        [
            action_reply("x = estimate_final_value(150, calculate_tariff(150, 7.5))"),
            action_reply("print(x)"),
            answer_from_last_observation,
        ]
    )
    episode = run_episode(TRADE, lm, "code")
    assert episode.steps[0].observation == NO_OUTPUT
    assert episode.steps[1].observation == "161.25"  # read back as a literal, as the original did
    assert (episode.correct, episode.turns) == (True, 3)


@needs_sandbox
def test_output_is_cut_at_2000_characters_and_errors_show_the_traceback() -> None:
    lm = ScriptedLM(
        [
            action_reply("print('x' * 5000)"),
            action_reply("print('partial')\ncaesar_decode('abc')"),
            "Answer: 161.25",
        ]
    )
    episode = run_episode(TRADE, lm, "code")
    first = episode.steps[0].observation or ""
    assert first == "x" * 2000 + "...\n[Output Truncated]"
    second = episode.steps[1].observation or ""
    assert second.startswith("partial\n") and "NameError" in second


@needs_sandbox
def test_browser_state_lives_on_the_host_across_turns() -> None:
    task = TASKS["web_browsing/price_of_legendary_wand"]
    lm = ScriptedLM(
        [
            action_reply("print(click_url('/products/wand'))"),
            action_reply("print(scroll_down())"),
            action_reply("print(go_to_previous_page())"),
            "Answer: 68.71",
        ]
    )
    episode = run_episode(task, lm, "code")
    assert "[Viewing page 2 of 2]" in (episode.steps[1].observation or "")
    assert "[Web Page Name: /]" in (episode.steps[2].observation or "")
    assert episode.correct


@needs_sandbox
def test_travel_max_and_min_are_the_builtins_and_sum_is_the_tool() -> None:
    task = TASKS["travel_itinerary_planning/budget_trip_to_paris"]
    lm = ScriptedLM(
        [
            action_reply(
                "f = min(find_flights('E', 'A', '2023-12-25'), key=lambda f: f['price'])\n"
                "h = min(book_hotel('A'), key=lambda h: h['price_per_night'])\n"
                "print(sum(f['price'], h['price_per_night'] * 4))\n"
                "sum([1, 2])"
            ),
            answer_from_last_observation,
        ]
    )
    episode = run_episode(task, lm, "code")
    observation = episode.steps[0].observation or ""
    assert observation.startswith("650\n") and "TypeError" in observation


# --- the benchmark runner and the command line ------------------------------------------------
@needs_sandbox
def test_benchmark_runs_modes_in_parallel_and_keeps_task_order() -> None:
    tasks = load_tasks("^message_decoder")
    seen: list[int] = []
    episodes = run_benchmark(
        tasks,
        ["code", "json"],
        lambda task, mode: ScriptedLM(reference_replies(task) if mode == "code" else ["Answer: x"]),
        workers=4,
        max_turns=2,
        on_episode=lambda episode, done, total: seen.append(done),
    )
    assert [(e.task, e.mode) for e in episodes] == [(t.name, m) for t in tasks for m in ("code", "json")]
    assert sorted(seen) == list(range(1, 17))
    assert all(e.correct for e in episodes if e.mode == "code")
    assert not any(e.correct for e in episodes if e.mode == "json")


@needs_sandbox
def test_cli_runs_reference_solutions_prints_table_and_writes_episodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "episodes.json"
    code = cli_run(["--model", "reference", "--tasks", "dna|trade", "--workers", "2", "-o", str(out)])
    printed = capsys.readouterr()
    assert code == 0
    assert "code     ALL TASKS                                 25     25     100.0       2.0" in printed.out
    assert "gpt-4-1106-preview           code          74.4       5.5" in printed.out
    assert "[ 25/25]" in printed.err
    saved = json.loads(out.read_text())
    assert len(saved["episodes"]) == 25 and all(e["correct"] for e in saved["episodes"])
    assert saved["episodes"][0]["messages"][0]["content"].startswith("You have access to the following tools")


def test_cli_rejects_bad_options_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run(["--model", "reference", "--tasks", "("]) == 2
    assert "not a valid regular expression" in capsys.readouterr().err
    assert cli_run(["--model", "reference", "--tasks", "nothing-matches"]) == 2
    assert cli_run(["--model", "reference", "--mode", "json"]) == 2
    assert "code only" in capsys.readouterr().err


# --- the same tasks through codeact.CodeAct -------------------------------------------------------
@needs_sandbox
def test_codeact_mode_grades_the_typed_submission() -> None:
    from codeact.m3tooleval import run_codeact_episode

    task = TASKS["cryptobotanists_plant_dna_sequencer/find_most_common_nucleotide_combined_sequence"]
    lm = ScriptedLM(
        [
            "Count first.\n```python\ncounts = count_nucleotides(''.join(['AGCT', 'CCGA', 'TTAG']))\nprint(counts)\n```",
            "```python\nflat = [x for kv in counts.items() for x in kv]\nsubmit(answer=find_max_nucleotide(*flat))\n```",
        ]
    )
    episode = run_codeact_episode(task, lm)
    assert (episode.mode, episode.correct, episode.turns, episode.answer) == (
        "codeact",
        True,
        2,
        "('A', 3)",
    )
    assert "def count_nucleotides(dna_sequence: str)" in lm.history[0]["messages"][0]["content"]

    wrong = run_codeact_episode(task, ScriptedLM(["```python\nsubmit(answer=['A', 3])\n```"]))
    assert (wrong.correct, wrong.turns, wrong.end_reason) == (False, 1, "submitted")


def test_context_overflow_ends_the_episode_as_the_original_did() -> None:
    from codeact.lm.errors import LMContextLengthError

    def overflow(messages: object) -> str:
        raise LMContextLengthError("Requested tokens (4122) exceed context window of 4096")

    episode = run_episode(TRADE, ScriptedLM(["Answer: 1", overflow]), "json")
    assert (episode.turns, episode.end_reason) == (1, "context_limit")


@needs_sandbox
@pytest.mark.parametrize(
    "command",
    [["codeact", "bench", "m3tooleval"], ["codeact.m3tooleval"]],
    ids=["codeact-bench", "python-m"],
)
def test_benchmark_runs_from_the_command_line(command: list[str]) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            *command,
            "--model",
            "reference",
            "--tasks",
            "^message_decoder",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "code     message_decoder                            8      8     100.0       2.0" in done.stdout


@needs_sandbox
def test_a_timed_out_action_is_observed_and_the_next_runs_in_a_fresh_session() -> None:
    task = TASKS["web_browsing/price_of_legendary_wand"]
    lm = ScriptedLM(
        [
            action_reply("marker = 1\nclick_url('/products/wand')\nwhile True:\n    pass"),
            action_reply("print('marker' in globals())\nprint(view())"),
            "Answer: 68.71",
        ]
    )
    episode = run_episode(task, lm, "code", action_timeout_s=1.0)
    assert "Timeout" in (episode.steps[0].observation or "")
    second = episode.steps[1].observation or ""
    assert second.startswith("False\n") and "[Web Page Name: /products/wand]" in second
    assert (episode.correct, episode.turns) == (True, 3)
