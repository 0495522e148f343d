"""The GPU check's speed report (benchmarks/gpu/cupy_speed.py) from a made-up result: the
targets are judged on the best variant a user gets, the summary shows what a graph replays."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))

import cupy_speed  # noqa: E402


def _row(**extra: Any) -> dict[str, Any]:
    return {"optimizer": "adam", "batch": 256, "mlcore-eager_ms": 2.0, "torch-cuda_ms": 2.1,
            "ratio_mlcore-eager": {"median": 0.95, "min": 0.9, "max": 1.0},
            "rel_error_vs_torch": {"mlcore-eager": 2e-6}} | extra


def test_targets_are_judged_on_the_compiled_step_when_there_is_one() -> None:
    eager_only = cupy_speed.targets({"cases": [_row()]})
    assert [t["passed"] for t in eager_only] == [True, False]  # the check, then 0.95 > 0.5
    compiled = _row(**{"mlcore_ms": 0.5, "ratio_mlcore": {"median": 0.24, "min": 0.2,
                                                          "max": 0.3}})
    (_, ratio) = cupy_speed.targets({"cases": [compiled]})
    assert ratio["target"] == "mlcore / torch-cuda, adam, batch 256" and ratio["passed"]


def test_summary_lists_variants_launches_and_the_graph(tmp_path: Path) -> None:
    row = _row(**{"mlcore_ms": 0.5, "ratio_mlcore": {"median": 0.24, "min": 0.2, "max": 0.3},
                  "mlcore_graph": {"replays": 99, "eager_calls": 1, "fallback_reasons": [],
                                   "nodes_per_graph": [{"KERNEL": 60, "MEMCPY": 13}]},
                  "launches": {"mlcore-eager": {"launch_calls_per_step": 0,
                                                "gpu_kernels_per_step": 70},
                               "mlcore": {"launch_calls_per_step": 1,
                                          "gpu_kernels_per_step": 60}}})
    result = {"cases": [row]}
    result["targets"] = cupy_speed.targets(result)
    (tmp_path / "speed.json").write_text(json.dumps(result))
    text = "\n".join(cupy_speed.summary_lines(tmp_path / "speed.json"))
    assert "| adam | 256 | mlcore-eager | 2 | 0.95 (0.9-1) |  | n/a / 70 |" in text
    assert "| adam | 256 | mlcore | 0.5 | 0.24 (0.2-0.3) |  | 1 / 60 |" in text
    assert "99 replays, 1 eager calls, one graph launch standing for 60 KERNEL, 13 MEMCPY" in text
    assert "- PASS mlcore / torch-cuda, adam, batch 256: 0.24 (target <= 0.5)" in text
    assert cupy_speed.summary_lines(tmp_path / "none.json") == ["speed: no speed.json"]
