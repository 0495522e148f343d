"""The conformance kit's pytest plugin: the ``mlcore_conformance`` marker and the
``mlcore_case`` fixture (pytest's ``pytest11`` entry point ``mlcore`` names this module;
``pytest -p no:mlcore`` turns it off). The kit itself is :mod:`mlcore.testing`.
"""

from __future__ import annotations

import pytest

from . import BoundCase, LayerCase, conformance_params, layer_cases

__all__ = ["pytest_configure", "pytest_generate_tests", "mlcore_case", "mlcore_layer_case"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mlcore_conformance(*plugins, cases=(), checks=CHECKS): run the test "
        "once per (activation or loss of the plugins, backend, check) with the mlcore_case "
        "fixture (mlcore.testing)")
    config.addinivalue_line(
        "markers", "mlcore_layer(layer, params={}, inputs=None, checks=LAYER_CHECKS): run the "
        "test once per (backend, layer check) with the mlcore_layer_case fixture "
        "(mlcore.testing.check_layer)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mlcore_layer_case" in metafunc.fixturenames:
        layer = metafunc.definition.get_closest_marker("mlcore_layer")
        if layer is None:
            raise pytest.UsageError(f"{metafunc.definition.nodeid} uses mlcore_layer_case: "
                                    f"mark it @pytest.mark.mlcore_layer(YourLayer, params=...)")
        metafunc.parametrize("mlcore_layer_case", layer_cases(*layer.args, **layer.kwargs),
                             indirect=True)
    if "mlcore_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("mlcore_conformance")
    if marker is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} uses mlcore_case: mark it "
                                f"@pytest.mark.mlcore_conformance('your-distribution')")
    params = conformance_params(*marker.args, **marker.kwargs)
    metafunc.parametrize("mlcore_case", params, indirect=True)


@pytest.fixture
def mlcore_case(request: pytest.FixtureRequest) -> BoundCase:
    """One (activation or loss, backend, check); call ``mlcore_case.run()``."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def mlcore_layer_case(request: pytest.FixtureRequest) -> LayerCase:
    """One (layer, backend, check); call ``mlcore_layer_case.run()``."""
    return request.param  # type: ignore[no-any-return]
