"""softsign whose backward forgets the square: f'(x) is 1 / (1 + |x|)², not 1 / (1 + |x|)."""

from typing import Any

import pluggy
from array_api_compat import array_namespace

hookimpl = pluggy.HookimplMarker("mlcore")


class SoftsignWrongGradient:
    def forward(self, x: Any) -> Any:
        return x / (1.0 + array_namespace(x).abs(x))

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        return dy / (1.0 + array_namespace(x).abs(x))  # wrong: should be squared


@hookimpl
def mlcore_activations() -> dict[str, Any]:
    return {"softsign_wrong_gradient": SoftsignWrongGradient}
