"""The template's tests: mlcore's conformance kit (installed with mlcore as a pytest plugin)
checks hard_tanh on every backend installed here, against a NumPy reference."""

from typing import Any

import numpy as np
import pytest

from mlcore.testing import Case


def reference(x: np.ndarray, min_val: float = -1.0, max_val: float = 1.0) -> np.ndarray:
    return np.clip(x, min_val, max_val)


@pytest.mark.mlcore_conformance("mlcore-plugin-template", cases=[
    Case("hard_tanh", reference=reference),
    Case("hard_tanh", {"min_val": -2.0, "max_val": 0.5}, reference=reference),
])
def test_conformance(mlcore_case: Any) -> None:
    mlcore_case.run()


def test_rejects_min_above_max() -> None:
    import mlcore

    with pytest.raises(mlcore.InvalidParameterError, match="min_val < max_val"):
        mlcore.activation("hard_tanh", min_val=1.0, max_val=0.0)
