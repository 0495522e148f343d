"""fit's training options: validation_split, metrics in the history, sample and class
weights (against PyTorch), initial_epoch, the shuffling stream across calls, streamed data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradcheck import host, rel_err

import mlcore
from mlcore.errors import InvalidParameterError

RNG = np.random.default_rng(4)
X = RNG.standard_normal((40, 3))
Y_BIN = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.float64)
Y_CLS = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5).astype(np.int64)
Y_REG = X @ np.array([[1.0], [-2.0], [0.5]])
W = RNG.uniform(0.2, 2.0, 40)
CASES = {
    "binary_cross_entropy": ([3, 4, 1], "sigmoid", Y_BIN),
    "cross_entropy": ([3, 4, 3], "softmax", Y_CLS),
    "mse": ([3, 4, 1], None, Y_REG),
}


def _model(sizes: list[int], out: str | None) -> mlcore.MLP:
    return mlcore.MLP(sizes, activation="tanh", output_activation=out, seed=1, dtype="float64")


def _torch_loss(torch: Any, name: str, logits: Any, y: np.ndarray) -> Any:
    F = torch.nn.functional
    if name == "binary_cross_entropy":
        t = torch.from_numpy(y.reshape(-1, 1))
        return F.binary_cross_entropy_with_logits(logits, t, reduction="none")[:, 0]
    if name == "cross_entropy":
        return F.cross_entropy(logits, torch.from_numpy(y), reduction="none")
    return ((logits - torch.from_numpy(y)) ** 2).mean(dim=1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_weights_match_torch(backend: Any, name: str) -> None:
    torch = pytest.importorskip("torch")
    sizes, out, y = CASES[name]
    model = _model(sizes, out)
    params = [torch.tensor(host(backend, p.value), requires_grad=True)
              for p in model.parameters()]
    model.fit(X, y, loss=name, optimizer="sgd", lr=0.1, epochs=1, batch_size=40,
              shuffle=False, sample_weight=W, verbose=False)
    h = torch.tanh(torch.from_numpy(X) @ params[0].T + params[1])
    logits = h @ params[2].T + params[3]
    (torch.from_numpy(W) * _torch_loss(torch, name, logits, y)).mean().backward()
    for p, t in zip(model.parameters(), params, strict=True):
        want = (t - 0.1 * t.grad).detach().numpy()
        assert rel_err(host(backend, p.value), want) <= 1e-10


def test_class_weight_is_sample_weight_by_label(backend: Any) -> None:
    a, b = _model([3, 4, 3], "softmax"), _model([3, 4, 3], "softmax")
    cw = {0: 0.5, 1: 2.0, 2: 1.5}
    ha = a.fit(X, Y_CLS, loss="cross_entropy", optimizer="sgd", epochs=2, batch_size=8,
               seed=0, class_weight=cw, verbose=False)
    hb = b.fit(X, Y_CLS, loss="cross_entropy", optimizer="sgd", epochs=2, batch_size=8,
               seed=0, sample_weight=np.array([cw[int(c)] for c in Y_CLS]), verbose=False)
    assert ha == hb
    with pytest.raises(InvalidParameterError, match="class_weight must be a dict"):
        a.fit(X, Y_CLS, loss="cross_entropy", class_weight={5: 1.0}, verbose=False)
    with pytest.raises(InvalidParameterError, match="class_weight applies to classification"):
        _model([3, 4, 1], None).fit(X, Y_REG, loss="mse", class_weight={0: 1.0}, verbose=False)


def test_unit_weights_change_nothing(backend: Any) -> None:
    a, b = _model([3, 4, 1], "sigmoid"), _model([3, 4, 1], "sigmoid")
    ha = a.fit(X, Y_BIN, loss="binary_cross_entropy", epochs=2, seed=3, verbose=False)
    hb = b.fit(X, Y_BIN, loss="binary_cross_entropy", epochs=2, seed=3, verbose=False,
               sample_weight=np.ones(40))
    assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-12)


def test_validation_split_and_metrics_in_history(backend: Any) -> None:
    model = _model([3, 4, 1], "sigmoid")
    h = model.fit(X, Y_BIN, loss="binary_cross_entropy", epochs=3, validation_split=0.25,
                  metrics=["auc", "f1"], verbose=False)
    assert set(h) == {"loss", "accuracy", "auc", "f1", "val_loss", "val_accuracy", "val_auc",
                      "val_f1"}
    assert all(len(v) == 3 for v in h.values())
    ev = model.evaluate(X[30:], Y_BIN[30:], metrics=["auc", "f1"])
    for k in ("loss", "accuracy", "auc", "f1"):
        assert ev[k] == pytest.approx(h[f"val_{k}"][-1], rel=1e-12)
    with pytest.raises(InvalidParameterError, match="validation_split must be a fraction"):
        model.fit(X, Y_BIN, loss="binary_cross_entropy", validation_split=1.0, verbose=False)
    with pytest.raises(InvalidParameterError, match="not both"):
        model.fit(X, Y_BIN, loss="binary_cross_entropy", validation_split=0.2,
                  validation_data=(X, Y_BIN), verbose=False)
    with pytest.raises(InvalidParameterError, match="list of metric names"):
        model.fit(X, Y_BIN, loss="binary_cross_entropy", metrics="auc", verbose=False)


def test_metrics_see_probabilities_of_a_logit_model(backend: Any) -> None:
    model = _model([3, 4, 1], None)  # outputs logits; BCE is fused from logits
    h = model.fit(X, Y_BIN, loss="binary_cross_entropy", epochs=1, metrics=["accuracy"],
                  batch_size=40, shuffle=False, verbose=False)
    assert h["accuracy"][0] == pytest.approx(h["accuracy"][0])
    probs = 1 / (1 + np.exp(-host(backend, model.predict(X))))
    model2 = _model([3, 4, 1], None)
    ev = model2.evaluate(X, Y_BIN, loss="binary_cross_entropy", metrics=["mse"])
    p2 = 1 / (1 + np.exp(-host(backend, model2.predict(X))))
    assert ev["mse"] == pytest.approx(float(np.mean((p2[:, 0] - Y_BIN) ** 2)), rel=1e-10)
    assert probs.shape == (40, 1)


def _fits(model: mlcore.MLP, epochs: int, resume: bool) -> dict[str, list[float]]:
    """``epochs`` calls of fit(epochs=1, seed=7) (or with initial_epoch), histories joined."""
    joined: dict[str, list[float]] = {}
    for e in range(epochs):
        span = {"epochs": e + 1, "initial_epoch": e} if resume else {"epochs": 1}
        h = model.fit(X, Y_BIN, loss="binary_cross_entropy", optimizer="sgd", batch_size=8,
                      seed=7, verbose=False, **span)
        for k, v in h.items():
            joined.setdefault(k, []).extend(v)
    return joined


def test_fit_in_a_loop_advances_the_shuffling_order(backend: Any) -> None:
    one = _model([3, 4, 1], "sigmoid").fit(X, Y_BIN, loss="binary_cross_entropy",
                                           optimizer="sgd", epochs=3, batch_size=8, seed=7,
                                           verbose=False)
    loop = _fits(_model([3, 4, 1], "sigmoid"), 3, resume=False)
    resumed = _fits(_model([3, 4, 1], "sigmoid"), 3, resume=True)
    assert loop == one == resumed  # SGD has no state: the same orders give the same run
    fresh = _model([3, 4, 1], "sigmoid")
    repeat = [fresh.fit(X, Y_BIN, loss="binary_cross_entropy", optimizer="sgd", epochs=1,
                        batch_size=8, seed=7, verbose=False)["loss"][0]]
    fresh._shuffle_state, fresh._epochs_seen = None, 0  # as if the stream restarted
    assert loop["loss"][1] != repeat[0]


def _gen_pairs(Xh: np.ndarray, yh: np.ndarray, size: int) -> Any:
    def batches() -> Any:
        for s in range(0, len(Xh), size):
            yield Xh[s:s + size], yh[s:s + size]
    return batches


def test_streamed_fit_equals_in_memory_fit(backend: Any) -> None:
    a, b = _model([3, 4, 1], "sigmoid"), _model([3, 4, 1], "sigmoid")
    ha = a.fit(X, Y_BIN, loss="binary_cross_entropy", epochs=2, batch_size=10, shuffle=False,
               verbose=False, metrics=["auc"])
    hb = b.fit(_gen_pairs(X, Y_BIN, 10), loss="binary_cross_entropy", epochs=2,
               verbose=False, metrics=["auc"])
    assert _close(ha, hb)
    c = _model([3, 4, 1], "sigmoid")
    pairs = list(_gen_pairs(X, Y_BIN, 10)())
    hc = c.fit(pairs, loss="binary_cross_entropy", epochs=2, verbose=False, metrics=["auc"])
    assert _close(hc, ha)


def _close(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return a.keys() == b.keys() and all(v == pytest.approx(b[k], rel=1e-12)
                                        for k, v in a.items())


def test_one_shot_generator_needs_steps_per_epoch(backend: Any) -> None:
    def forever() -> Any:
        while True:
            yield from _gen_pairs(X, Y_BIN, 10)()

    model = _model([3, 4, 1], "sigmoid")
    h = model.fit(forever(), loss="binary_cross_entropy", epochs=3, steps_per_epoch=4,
                  verbose=False)
    assert len(h["loss"]) == 3
    once = _gen_pairs(X, Y_BIN, 10)()
    with pytest.raises(InvalidParameterError, match="pass the generator function itself"):
        model.fit(once, loss="binary_cross_entropy", epochs=2, verbose=False)


def test_memmap_and_torch_dataloader_stream(backend: Any, tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "x.npy"
    np.save(path, X)
    Xm = np.load(path, mmap_mode="r")
    batches = mlcore.data.batches(Xm, Y_BIN, batch_size=10, seed=0)
    model = _model([3, 4, 1], "sigmoid")
    h = model.fit(batches, loss="binary_cross_entropy", epochs=2, verbose=False)
    assert len(h["loss"]) == 2
    orders = [np.concatenate([b[1] for b in batches]) for _ in range(2)]
    assert not np.array_equal(orders[0], orders[1])  # the order advances each epoch
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y_BIN))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    h = model.fit(loader, loss="binary_cross_entropy", epochs=2, verbose=False,
                  validation_data=(X, Y_BIN))
    assert len(h["val_loss"]) == 2


def test_batches_repeat_with_a_seed_and_cover_every_row() -> None:
    a = [b[1] for b in mlcore.data.batches(X, np.arange(40), batch_size=16, seed=3)]
    b = [b[1] for b in mlcore.data.batches(X, np.arange(40), batch_size=16, seed=3)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(40))
    assert [len(x) for x in a] == [16, 16, 8]


# -- round 3: no silent early end or no-op ---------------------------------------------------
def test_initial_epoch_at_or_past_epochs_is_refused() -> None:
    model = _model([3, 4, 1], "sigmoid")
    with pytest.raises(InvalidParameterError, match=r"initial_epoch=3 is not below epochs=3.*"
                                                    r"epochs=3 \+ k"):
        model.fit(X, Y_BIN, loss="binary_cross_entropy", epochs=3, initial_epoch=3,
                  verbose=False)


def test_all_zero_sample_weights_are_refused() -> None:
    model = _model([3, 4, 1], "sigmoid")
    with pytest.raises(mlcore.InvalidValueError, match="0 for every training sample"):
        model.fit(X, Y_BIN, loss="binary_cross_entropy", sample_weight=np.zeros(40),
                  verbose=False)
    with pytest.raises(mlcore.InvalidValueError, match="sample_weight times class_weight"):
        model.fit(X, Y_BIN, loss="binary_cross_entropy", class_weight={0: 0.0, 1: 0.0},
                  verbose=False)


def test_class_weight_takes_numpy_keys_and_refuses_infinity() -> None:
    model = _model([3, 4, 1], "sigmoid")
    classes = np.unique(Y_BIN.astype(np.int64))
    weights = dict(zip(classes, np.array([1.0, 2.0], np.float32), strict=True))
    model.fit(X, Y_BIN, loss="binary_cross_entropy", class_weight=weights, verbose=False)
    with pytest.raises(InvalidParameterError, match="finite weight"):
        model.fit(X, Y_BIN, loss="binary_cross_entropy", class_weight={0: np.inf},
                  verbose=False)


def test_validation_split_takes_a_numpy_float() -> None:
    h = _model([3, 4, 1], "sigmoid").fit(X, Y_BIN, loss="binary_cross_entropy",
                                         validation_split=np.float32(0.25), verbose=False)
    assert "val_loss" in h


def test_a_one_shot_stream_that_runs_out_warns_and_stops() -> None:
    def gen(k: int) -> Any:
        for i in range(k):
            yield X[2 * i:2 * i + 2], Y_BIN[2 * i:2 * i + 2]

    model = _model([3, 4, 1], "sigmoid")
    with pytest.warns(RuntimeWarning, match=r"ran out after 1 of steps_per_epoch=2 batches "
                                            r"in epoch 2.*training stops here"):
        h = model.fit(gen(3), loss="binary_cross_entropy", steps_per_epoch=2, epochs=5,
                      verbose=False)
    assert len(h["loss"]) == 2
    with pytest.warns(RuntimeWarning, match="had no batch left for epoch 3"):
        h = model.fit(gen(4), loss="binary_cross_entropy", steps_per_epoch=2, epochs=5,
                      verbose=False)
    assert len(h["loss"]) == 2


def test_metrics_take_their_batches_in_chunks_and_keep_copies(
        backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker gathers batches into chunks of at least ``CHUNK`` rows before a metric
    sees them: the results equal one batch at a time (a metric's result does not depend on
    how its data is cut), a metric is called once per chunk, and each batch's outputs are
    copied (a compiled step may reuse or donate the array it returned)."""
    from mlcore.training import loop

    seen: list[int] = []
    original = mlcore.metric("f1").__class__.update

    def counting(self: Any, state: Any, y_pred: Any, y_true: Any) -> Any:
        seen.append(int(y_pred.shape[0]))
        return original(self, state, y_pred, y_true)

    monkeypatch.setattr(mlcore.metric("f1").__class__, "update", counting)
    histories = []
    for chunk in (1, 4096):
        monkeypatch.setattr(loop.Tracker, "CHUNK", chunk)
        seen.clear()
        model = _model([3, 4, 1], None)
        histories.append(model.fit(X, Y_BIN, loss="binary_cross_entropy", epochs=2,
                                   batch_size=8, shuffle=False, metrics=["auc", "f1"],
                                   verbose=False))
        assert seen == ([8] * 5 * 2 if chunk == 1 else [40, 40]), seen
    for k in ("auc", "f1"):
        assert histories[1][k] == pytest.approx(histories[0][k], rel=1e-12), k

    from mlcore.arrays.namespace import writes_in_place
    from mlcore.training.lossplan import resolve_loss

    model = _model([3, 4, 1], "sigmoid")
    tracker = loop.Tracker([mlcore.metric("mse")], model, resolve_loss(model, "mse"))
    b = mlcore.get_backend()
    out = b.asarray(np.array([[0.25], [0.75]], np.float32))
    tracker.update(b.xp, out, b.asarray(np.array([[0.0], [1.0]], np.float32)))
    if writes_in_place(out):
        out[...] = 9.0  # the step reuses its output buffer: the tracker kept a copy
    assert tracker.results()["mse"] == pytest.approx(0.0625, rel=1e-6)
