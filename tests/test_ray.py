"""Batches on a real local Ray cluster (two CPUs, started here) with scripted models."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'codeact[ray]')")

from codeact import LM, CodeAct, ScriptedLM  # noqa: E402
from codeact.ray import RayExecutor, per_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native sandbox needs Linux")

CALL_TOOL = "```python\nsubmit(answer=bump(x))\n```"


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 << 20,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}},
    )
    yield
    ray.shutdown()


def bump(x: int) -> int:
    """x plus one."""
    return x + 1


def _act(*tools: object, replies: int = 200) -> CodeAct:
    return CodeAct("x: int -> answer: int", tools=list(tools) or [bump], lm=ScriptedLM([CALL_TOOL] * replies))


def test_a_batch_runs_on_the_cluster_in_input_order_with_full_records() -> None:
    executor = RayExecutor(workers=2, progress=True)
    predictions = _act().batch([{"x": i} for i in range(12)], executor=executor)
    assert [p.answer for p in predictions] == list(range(1, 13))
    assert all(p.end_reason == "submitted" for p in predictions)
    assert [p.trajectory[0].tool_calls[0].result for p in predictions] == list(range(1, 13))
    assert executor.stats.usage.calls == 12
    assert executor.stats.usage.total_tokens == sum(p.usage.total_tokens for p in predictions)
    assert len(executor.stats.workers) == 2  # both workers took tasks
    assert executor.stats.retries == 0


def test_as_completed_gives_each_index_once_and_reports_progress() -> None:
    seen: list[int] = []
    executor = RayExecutor(workers=2, on_result=lambda index, prediction: seen.append(index))
    pairs = list(executor.as_completed(_act(), [{"x": i} for i in range(8)]))
    assert sorted(index for index, _ in pairs) == list(range(8))
    assert sorted(seen) == list(range(8))
    assert all(prediction.answer == index + 1 for index, prediction in pairs)


def _kill_once(marker: str) -> object:
    def bump(x: int) -> int:
        """x plus one."""
        if x == 3:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return x + 1
            os.kill(os.getpid(), signal.SIGKILL)  # the Ray worker running this task dies mid-task
        return x + 1

    return bump


def test_a_worker_killed_mid_batch_has_its_tasks_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    executor = RayExecutor(workers=2, max_retries=2)
    predictions = _act(_kill_once(str(tmp_path / "killed"))).batch([{"x": i} for i in range(10)], executor=executor)
    assert (tmp_path / "killed").exists()
    assert [p.answer for p in predictions] == list(range(1, 11))
    assert all(p.end_reason == "submitted" for p in predictions)
    assert executor.stats.retries >= 1 and executor.stats.failed == 0
    assert executor.stats.usage.calls >= 10


def test_a_task_that_keeps_killing_its_worker_ends_as_an_error_prediction() -> None:
    def bump(x: int) -> int:
        """x plus one."""
        if x == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return x + 1

    executor = RayExecutor(workers=2, max_retries=1)
    predictions = _act(bump).batch([{"x": i} for i in range(5)], executor=executor)
    assert [p.answer for p in predictions] == [1, 2, None, 4, 5]
    failed = predictions[2]
    assert failed.end_reason == "error"
    assert re.search(r"failed on [23] Ray workers; last: ActorDiedError", failed.record.error or "")
    assert executor.stats.failed == 1


def test_a_tool_that_cannot_travel_is_named_with_what_to_do() -> None:
    lock = threading.Lock()

    def guarded(x: int) -> int:
        """x, under a lock."""
        with lock:
            return x

    with pytest.raises(TypeError, match=r"tool 'guarded' cannot be sent to Ray workers.*per_worker"):
        _act(guarded).batch([{"x": 1}], executor=RayExecutor(workers=1))


class Counter:
    """Holds a lock, so it cannot be pickled: built on each worker instead."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def bump(self, x: int) -> int:
        """x plus one."""
        with self.lock:
            return x + 1


def test_per_worker_builds_the_tool_on_each_worker() -> None:
    tool = per_worker(lambda: Counter().bump)
    assert tool.__name__ == "bump" and tool.__doc__ == "x plus one." and tool(1) == 2
    executor = RayExecutor(workers=2)
    predictions = _act(tool).batch([{"x": i} for i in range(4)], executor=executor)
    assert [p.answer for p in predictions] == [1, 2, 3, 4]
    assert all(where.split(":")[1] != str(os.getpid()) for where in executor.stats.workers)


def test_an_lm_with_an_api_key_is_refused_with_what_to_do() -> None:
    act = CodeAct("x: int -> answer: int", lm=LM("openai/gpt-4o-mini", api_key="sk-test"))
    with pytest.raises(TypeError, match="runtime_env"):
        act.batch([{"x": 1}], executor=RayExecutor(workers=1))


def test_bad_executor_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        RayExecutor(threads=0)
    with pytest.raises(ValueError, match="workers"):
        RayExecutor(workers=0)


def test_bench_m3tooleval_runs_on_the_cluster_at_an_address(tmp_path: Path) -> None:
    import json
    import subprocess

    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "episodes.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "codeact",
            "bench",
            "m3tooleval",
            "--model",
            "reference",
            "--limit",
            "4",
            "--ray",
            address,
            "--quiet",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"on Ray ({address})" in proc.stderr
    episodes = json.loads(out.read_text())["episodes"]
    assert len(episodes) == 4 and all(e["correct"] for e in episodes)
