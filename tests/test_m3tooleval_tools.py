"""M3ToolEval's re-implemented tools, tasks and grader, without a sandbox or a model."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from importlib import resources

import pytest

from codeact.m3tooleval import CATEGORIES, is_correct, load_tasks, toolset
from codeact.m3tooleval.solutions import SOLUTIONS
from codeact.m3tooleval.tools.calculator import calculator
from codeact.m3tooleval.tools.travel import book_hotel, find_flights
from codeact.m3tooleval.tools.web_browser import WebBrowser, web_metadata

TASKS_PER_CATEGORY = {
    "message_decoder": 8,
    "cryptobotanists_plant_dna_sequencer": 8,
    "trade_calculator": 17,
    "travel_itinerary_planning": 15,
    "web_browsing": 34,
}


def _run_solution(task_name: str) -> str:
    """Run a reference solution's actions in-process, with the task's tools as plain functions
    (as the original's REPL namespace held them); return the last action's printed output."""
    task = next(t for t in load_tasks() if t.name == task_name)
    namespace = task.make_tools().namespace()
    out = ""
    for action in SOLUTIONS[task_name]:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(action, namespace)
        out = buffer.getvalue()
    return out


# --- tasks -----------------------------------------------------------------------------------------
def test_all_82_tasks_load_with_their_categories_and_prompts() -> None:
    tasks = load_tasks()
    assert len(tasks) == 82
    assert {c: sum(t.category == c for t in tasks) for c in CATEGORIES} == TASKS_PER_CATEGORY
    for task in tasks:
        assert task.instruction in task.prompt("code")
        assert "Action:" in task.prompt("json")
        assert [s.name for s in task.tools] == list(task.make_tools().tools)
    tuple_task = next(t for t in tasks if t.name.endswith("combined_sequence"))
    assert tuple_task.expected_output == ("A", 3)


def test_task_pattern_selects_by_regex_and_bad_patterns_say_so() -> None:
    assert len(load_tasks("^web_browsing/price_of")) == 4
    assert load_tasks("no-such-task") == []
    with pytest.raises(ValueError, match="not a valid regular expression"):
        load_tasks("price_of(")
    with pytest.raises(ValueError, match="unknown action mode"):
        load_tasks()[0].prompt("yaml")


def test_data_ships_with_the_licence_in_the_package() -> None:
    data = resources.files("codeact.m3tooleval").joinpath("data")
    licence = data.joinpath("LICENSE.code-act.MIT.txt").read_text()
    assert "MIT" in licence or "Permission is hereby granted" in licence
    assert len(json.loads(gzip.decompress(data.joinpath("m3tooleval_tasks.json.gz").read_bytes()))) == 82


# --- every expected output, reproduced with the tools -------------------------------------------
@pytest.mark.parametrize("category", CATEGORIES)
def test_tools_reproduce_every_expected_output_of_the_category(category: str) -> None:
    tasks = [t for t in load_tasks() if t.category == category]
    assert len(tasks) == TASKS_PER_CATEGORY[category]
    wrong = {}
    for task in tasks:
        printed = _run_solution(task.name).strip()
        if printed != str(task.expected_output) or not is_correct(printed, task.expected_output):
            wrong[task.name] = (printed, task.expected_output)
    assert wrong == {}


def test_every_task_has_a_reference_solution() -> None:
    assert set(SOLUTIONS) == {t.name for t in load_tasks()}


# --- the grader: the original rule ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "expected", "correct"),
    [
        ("fchahcufcu", "fchahcufcu", True),
        ("'fchahcufcu'", "fchahcufcu", True),
        ("1050", 1050, True),
        ("1050.0", 1050, True),
        ("161.25", 161.25, True),
        ("380.42", 380.41999999999996, False),
        ("380.41999999999996", 380.41999999999996, True),
        ("380", 380.41999999999996, True),  # the original coerces the expected float with int()
        ("('A', 3)", ("A", 3), True),
        ("['A', 3]", ("A", 3), False),
        ("{'T': 1, 'A': 2, 'C': 2, 'G': 1}", {"T": 1, "A": 2, "C": 2, "G": 1}, True),
        ("{'A': 2, 'T': 1, 'C': 2, 'G': 1}", {"T": 1, "A": 2, "C": 2, "G": 1}, False),
        ("[36380.0, 48150.0, 68480.0]", [36380.0, 48150.0, 68480.0], True),
        ("[36380, 48150, 68480]", [36380.0, 48150.0, 68480.0], False),
        ("False", False, True),
        ("True", False, False),
        ("Engineering.", "Engineering", False),
        ("", 3, False),
    ],
)
def test_grader_follows_the_original_rule(answer: str, expected: object, correct: bool) -> None:
    assert is_correct(answer, expected) is correct


# --- tools ---------------------------------------------------------------------------------------
def test_browser_starts_on_home_pages_five_lines_and_keeps_history() -> None:
    browser = WebBrowser()
    home = browser.view()
    assert home.startswith("----------\n[Web Page Name: /]\n[Viewing page 1 of 2]\n\n")
    assert "Meet Our Team" not in home
    assert "Meet Our Team" in browser.scroll_down()
    assert browser.scroll_down() == "[Reached the bottom of the page.]\n"
    opened = browser.click_url("'/products/wand'")
    assert opened.startswith("[Opened page: /products/wand]\n")
    browser.click_url("/products/wand/legendary_wand")
    assert "Price: $68.71" in browser.view()
    assert browser.go_to_previous_page().startswith("[Opened page: /products/wand]")
    assert browser.go_to_previous_page().startswith("[Opened page: /]")
    assert browser.go_to_previous_page() == "[No previous page.]"
    assert browser.scroll_up() == "[Reached the top of the page.]\n"
    # The site's own link to customer support is broken, as in the original.
    assert browser.click_url("/team/customer_support") == "[URL not found.]"
    assert "Customer Support Team" in browser.click_url("/team/customer-support")


def test_each_task_gets_its_own_browser() -> None:
    first, second = toolset("web_browsing"), toolset("web_browsing")
    first.functions["click_url"]("/products")
    assert "[Web Page Name: /products]" in first.functions["view"]()
    assert "[Web Page Name: /]" in second.functions["view"]()


def test_web_metadata_matches_the_pages() -> None:
    browser = WebBrowser()
    for item in web_metadata()["item_info"]:
        path = "/products/{}/{}".format(
            item["name"].split(" ", 1)[1].lower().replace(" ", "_"),
            item["name"].lower().replace(" ", "_"),
        )
        assert f"${item['price']}" in browser.click_url(path)


def test_calculator_matches_python_arithmetic_and_refuses_everything_else() -> None:
    for expression in [
        "2 + (3 * 4)",
        "171.06 + 103.84 + 105.52",
        "(82.89 + 142.77) * 0.9",
        "7 // 2 - -3 ** 2",
        "round(2.675, 2)",
    ]:
        assert calculator(expression) == eval(expression)
    for bad in [
        "__import__('os').system('true')",
        "().__class__",
        "open('/etc/passwd')",
        "9 ** 9 ** 9",
        "x + 1",
    ]:
        assert calculator(bad) == f"Failed to evaluate expression: {bad}"
    assert calculator(5) == "Failed to evaluate expression: 5"  # type: ignore[arg-type]


def test_travel_tools_accept_quoted_locations_and_reject_unknown_ones() -> None:
    assert find_flights('"E"', "A", "2023-12-25") == find_flights("E", '"A"', "2023-12-25")
    assert [f["price"] for f in find_flights("E", "B", "2023-11-10")] == [350, 165]
    assert [h["price_per_night"] for h in book_hotel("B", "gym", "pool")] == [160]
    with pytest.raises(ValueError, match=r"Origin \[Z\] is not supported"):
        find_flights("Z", "A", "2023-12-25")
    with pytest.raises(ValueError, match=r"Location \[Q\] is not supported"):
        book_hotel("Q")


def test_travel_sum_tool_shadows_the_builtin_like_the_original() -> None:
    tools = toolset("travel_itinerary_planning")
    assert tools.functions["sum"](1, 2, 3) == 6
    with pytest.raises(TypeError):
        tools.functions["sum"]([1, 2, 3])
    assert tools.sandbox_builtins == {"max", "min"}
    assert [t.name for t in tools.host_tools()] == [
        "find_flights",
        "book_hotel",
        "budget_calculator",
        "sum",
    ]


def test_unknown_category_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown M3ToolEval category"):
        toolset("chess")
