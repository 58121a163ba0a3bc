"""The HTML run report: self-contained, escaped, folded, and readable in a real browser."""

from __future__ import annotations

import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from codeact.lm.base import Usage
from codeact.report import FOLD_LINES, render_html, write_report
from codeact.sandbox.interpreter import ToolCall
from codeact.trajectory import RunRecord, Step, StepError

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def make_record() -> RunRecord:
    long_output = "\n".join(f"row {i}: value={i * i}" for i in range(300))
    steps = [
        Step(
            index=0,
            reply="I will look at the rows.\n```python\n...\n```",
            reasoning="I will look at the rows and add them up.",
            code="rows = load()\nfor r in rows:\n    print(r)\ntotal = add(17, 25)\ntotal",
            stdout=long_output,
            value="42",
            lm_s=1.4,
            exec_s=0.35,
            tool_s=0.2,
            tool_calls=[
                ToolCall("load"),
                ToolCall("add", kwargs={"a": 17, "b": 25}, result=42, duration_s=0.01),
                ToolCall(
                    "delete",
                    args=["/etc"],
                    approval="denied",
                    error="PermissionError: the call of tool 'delete' was denied: no",
                ),
            ],
            prompt_tokens=812,
            completion_tokens=64,
            cost=0.0012,
            observation="stdout:\nrow 0 ...",
        ),
        Step(
            index=1,
            reasoning="Divide next.",
            code="x = 1 / 0",
            stdout="<script>alert('pwned')</script>",
            error=StepError(
                "ZeroDivisionError",
                "division by zero",
                'Traceback (most recent call last):\n  File "<step>", line 1\nZeroDivisionError: division by zero',
                1,
                "x = 1 / 0",
            ),
            lm_s=0.9,
            exec_s=0.01,
            prompt_tokens=950,
            completion_tokens=20,
            cost=0.0009,
        ),
        Step(
            index=2,
            reasoning="Submit.",
            code="submit(answer=total)",
            submitted={"answer": 42},
            lm_s=0.7,
            exec_s=0.005,
            prompt_tokens=1000,
            completion_tokens=10,
            cost=0.001,
        ),
    ]
    record = RunRecord(
        signature="task -> answer: int",
        inputs={"task": "What is 17 plus 25? Use the add tool."},
        steps=steps,
        outputs={"answer": 42},
        end_reason="submitted",
        model="openai/gpt-4o-mini",
        max_iters=10,
        usage=Usage(2762, 94, 3, 0.0031),
        started_at=time.time() - 4,
    )
    record.finish_timings(record.started_at + 3.5)
    return record


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_loads_nothing_from_the_network() -> None:
    html = render_html(make_record())
    parser = _Collector()
    parser.feed(html)
    for tag, attrs in parser.tags:
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
        if tag == "script":
            assert "src" not in attrs
        for name in ("src", "href"):
            assert not attrs.get(name), (tag, attrs)
    assert not re.search(r"https?://|url\(|@import", html)


def test_report_shows_task_steps_errors_and_answer() -> None:
    html = render_html(make_record())
    assert "What is 17 plus 25? Use the add tool." in html
    assert html.count('<section class="step') == 3
    assert 'id="step-1"' in html and 'id="step-3"' in html
    assert "I will look at the rows and add them up." in html
    assert "ZeroDivisionError" in html and "division by zero" in html and "line 1" in html
    assert 'id="end-reason">submitted<' in html
    assert re.search(r'id="answer".*?42', html, re.S)
    assert "$0.0031" in html and "2,856" in html  # cost and total tokens


def test_report_highlights_code() -> None:
    html = render_html(make_record())
    assert '<div class="hl">' in html
    assert '<span class="k">for</span>' in html  # a keyword, styled


def test_report_escapes_what_the_code_printed() -> None:
    html = render_html(make_record())
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html


def test_long_output_folds_behind_a_preview() -> None:
    html = render_html(make_record())
    assert "Show all (300 lines" in html
    assert '<details class="fold">' in html
    assert 'class="preview"' in html
    assert "row 299: value=89401" in html  # the full output is kept, folded


def test_short_output_does_not_fold() -> None:
    record = make_record()
    record.steps[0].stdout = "\n".join(["line"] * (FOLD_LINES - 1))
    assert "Show all" not in render_html(record)


def test_timeline_has_a_bar_per_step_and_kind() -> None:
    html = render_html(make_record())
    svg = html[html.index("<svg") : html.index("</svg>")]
    for text in (
        "Step 1: model 1.40 s",
        "Step 1: execution 350 ms",
        "Step 1: tools 200 ms in 3 call(s)",
        "Step 3: model 700 ms",
    ):
        assert f"<title>{text}</title>" in svg


def test_run_without_timings_or_answer() -> None:
    record = RunRecord(
        signature="q -> a",
        inputs={"q": "hi"},
        end_reason="max_iters",
        error="no valid submit",
        steps=[Step(index=0, reply="no code here")],
    )
    html = render_html(record)
    assert "No model, execution or tool time was recorded" in html
    assert "No answer." in html and "no code here" in html


def test_write_report_round_trips_a_saved_record(tmp_path: Path) -> None:
    record = make_record()
    record.save(tmp_path / "trace.json")
    loaded = RunRecord.load(tmp_path / "trace.json")
    path = write_report(loaded, tmp_path / "sub" / "r.html")

    def without_footer(html: str) -> str:
        return re.sub(r"<footer>.*?</footer>", "", html, flags=re.S)

    assert without_footer(path.read_text()) == without_footer(render_html(record))


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed (scripts/setup.d/40-browser.sh installs "
            "Debian's chromium and chromium-driver as root)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_report_reads_well_in_chromium(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    page = write_report(make_record(), tmp_path / "report.html")
    browser.get(page.as_uri())
    steps = browser.find_elements(By.CSS_SELECTOR, "section.step")
    assert len(steps) == 3 and all(s.is_displayed() for s in steps)
    assert "Step 2" in steps[1].text and "ZeroDivisionError: division by zero" in steps[1].text
    answer = browser.find_element(By.ID, "answer")
    assert answer.is_displayed() and "42" in answer.text
    assert browser.find_element(By.ID, "end-reason").text == "submitted"
    assert browser.find_element(By.CSS_SELECTOR, "svg.timeline").size["width"] > 500

    # The long output is folded: its preview shows, the full text does not until unfolded.
    fold = steps[0].find_element(By.CSS_SELECTOR, "details.fold")
    preview = steps[0].find_element(By.CSS_SELECTOR, "pre.preview")
    full = fold.find_element(By.TAG_NAME, "pre")
    assert preview.is_displayed() and not full.is_displayed()
    fold.find_element(By.TAG_NAME, "summary").click()
    assert full.is_displayed() and not preview.is_displayed()
    assert "row 299: value=89401" in full.text

    browser.find_element(By.XPATH, "//button[text()='Collapse all']").click()
    assert not full.is_displayed()
    browser.find_element(By.XPATH, "//button[text()='Expand all']").click()
    tracebacks = [d for d in browser.find_elements(By.TAG_NAME, "summary") if d.text == "Traceback"]
    assert tracebacks and tracebacks[0].find_element(By.XPATH, "..").find_element(By.TAG_NAME, "pre").is_displayed()
    browser.find_element(By.XPATH, "//button[text()='Collapse all']").click()

    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    keep = Path(__file__).resolve().parents[1] / ".pytest_cache" / "report-screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, keep)


def test_report_shows_each_tool_call_with_its_approval() -> None:
    html = render_html(make_record())
    assert "Tool calls (3)" in html
    assert "add(a=17, b=25)" in html and "<td>42</td>" in html
    assert '<tr class="denied"><td>delete(&#x27;/etc&#x27;)</td>' in html
    assert "was denied: no" in html


def test_report_shows_language_model_calls_from_code() -> None:
    from codeact.trajectory import LLMCall

    record = make_record()
    record.steps[0].llm_calls = [
        LLMCall(
            "Summarise part 1",
            reply="It is about <cats>",
            prompt_tokens=30,
            completion_tokens=5,
            cost=0.0001,
            duration_s=0.4,
        )
    ]
    html = render_html(record)
    assert "Language-model calls from code (1)" in html
    assert "It is about &lt;cats&gt;" in html and "<td>35</td>" in html
