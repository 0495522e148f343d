"""Callbacks and schedules: hooks, early stopping, checkpoints that resume exactly, learning
rates against torch.optim.lr_scheduler, the CSV log."""

from __future__ import annotations

import csv
import math
from typing import Any

import numpy as np
import pytest
from gradcheck import host

import mlcore
from mlcore import callbacks as cb
from mlcore import schedules
from mlcore.errors import InvalidParameterError, ModelFileError
from mlcore.saving.checkpoint import load_checkpoint, save_checkpoint

RNG = np.random.default_rng(9)
X = RNG.standard_normal((60, 4))
Y = (X[:, 0] - X[:, 2] > 0).astype(np.float64)
X_VAL, Y_VAL = X[:20] + 0.3 * RNG.standard_normal((20, 4)), Y[:20]
FIT = {"loss": "binary_cross_entropy", "batch_size": 16, "seed": 2, "verbose": False}


def _model(**kw: Any) -> mlcore.MLP:
    return mlcore.MLP([4, 8, 1], activation="tanh", output_activation="sigmoid", seed=3, **kw)


class Counter(cb.Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_begin(self, logs: Any = None) -> None:
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_end(self, batch: int, logs: Any = None) -> None:
        self.calls.append(f"batch_end {batch}")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, logs: Any = None) -> None:
        self.calls.append("train_end")


def test_hooks_run_in_order_from_initial_epoch(backend: Any) -> None:
    c = Counter()
    _model().fit(X, Y, epochs=3, initial_epoch=1, callbacks=[c], **FIT)
    keys = "['accuracy', 'loss']"
    assert c.calls == (["train_begin", "epoch_begin 1"]
                       + [f"batch_end {b}" for b in range(4)] + [f"epoch_end 1 {keys}",
                                                                 "epoch_begin 2"]
                       + [f"batch_end {b}" for b in range(4)] + [f"epoch_end 2 {keys}",
                                                                 "train_end"])
    with pytest.raises(InvalidParameterError, match="must be mlcore.callbacks.Callback"):
        _model().fit(X, Y, callbacks=[print], **FIT)


def test_stop_training_from_a_callback(backend: Any) -> None:
    class StopAtTwo(cb.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.model.stop_training = epoch == 1

    h = _model().fit(X, Y, epochs=10, callbacks=[StopAtTwo()], **FIT)
    assert len(h["loss"]) == 2


def test_early_stopping_restores_the_best_weights(backend: Any) -> None:
    model = _model()
    stop = cb.EarlyStopping(patience=2, restore_best_weights=True)
    h = model.fit(X, Y, epochs=200, lr=0.05, validation_data=(X_VAL, Y_VAL), callbacks=[stop],
                  **FIT)
    n = len(h["val_loss"])
    best = int(np.argmin(h["val_loss"]))
    assert n < 200 and n == best + 3 and stop.stopped_epoch == n - 1
    assert model.evaluate(X_VAL, Y_VAL)["loss"] == pytest.approx(h["val_loss"][best], rel=1e-5)


def test_early_stopping_modes_and_errors(backend: Any) -> None:
    assert cb.EarlyStopping(monitor="val_auc").mode == "max"
    assert cb.EarlyStopping(monitor="loss").mode == "min"
    with pytest.raises(InvalidParameterError, match="fit does not report; available"):
        _model().fit(X, Y, epochs=2, callbacks=[cb.EarlyStopping()], **FIT)
    with pytest.raises(InvalidParameterError, match="patience must be an integer"):
        cb.EarlyStopping(patience=-1)


def test_checkpoint_resumes_exactly(backend: Any, tmp_path: Any) -> None:
    full = _model()
    opt = mlcore.Adam(full.parameters(), lr=0.01, clip_norm=1.0)
    h_full = full.fit(X, Y, epochs=6, optimizer=opt, **FIT)
    first = _model()
    path = tmp_path / "ckpt-{epoch}.safetensors"
    saver = cb.ModelCheckpoint(path, monitor="loss")
    first.fit(X, Y, epochs=3, optimizer=mlcore.Adam(first.parameters(), lr=0.01, clip_norm=1.0),
              callbacks=[saver], **FIT)
    assert saver.last_saved == str(tmp_path / "ckpt-3.safetensors")
    ck = load_checkpoint(saver.last_saved)
    assert ck.epoch == 3 and ck.optimizer.clip_norm == 1.0
    h_rest = ck.model.fit(X, Y, epochs=6, initial_epoch=ck.epoch, optimizer=ck.optimizer, **FIT)
    assert h_rest["loss"] == h_full["loss"][3:]
    for p, q in zip(full.parameters(), ck.model.parameters(), strict=True):
        np.testing.assert_array_equal(host(backend, p.value), host(backend, q.value))


def test_checkpoint_save_best_only_and_bad_files(backend: Any, tmp_path: Any) -> None:
    path = tmp_path / "best.safetensors"
    saver = cb.ModelCheckpoint(path, save_best_only=True)
    model = _model(norm="batch")
    h = model.fit(X, Y, epochs=5, validation_data=(X_VAL, Y_VAL), callbacks=[saver], **FIT)
    ck = load_checkpoint(path)
    best = ck.model.evaluate(X_VAL, Y_VAL, loss="binary_cross_entropy")["loss"]
    assert best == pytest.approx(min(h["val_loss"]), rel=1e-5)
    model.save(tmp_path / "model.safetensors")
    with pytest.raises(ModelFileError, match="not an mlcore checkpoint"):
        load_checkpoint(tmp_path / "model.safetensors")
    save_checkpoint(path, model, mlcore.SGD(model.parameters()), epoch=1)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="failed its checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize(("ours", "theirs"), [
    (lambda: schedules.step(0.1, gamma=0.5, every=3),
     lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    (lambda: schedules.exponential(0.1, gamma=0.8),
     lambda t, o: t.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    (lambda: schedules.cosine(0.1, 10, min_lr=0.01),
     lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01)),
])
def test_schedules_match_torch(ours: Any, theirs: Any) -> None:
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref, mine = theirs(torch, opt), ours()
    for epoch in range(10):
        assert mine(epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        ref.step()


def test_cosine_warm_up_is_linear() -> None:
    s = schedules.cosine(1.0, 10, warmup=4)
    assert [s(e) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert s(10) == pytest.approx(0.0) and s(50) == pytest.approx(0.0)
    assert s(7) == pytest.approx((1 + math.cos(math.pi * 3 / 6)) / 2)
    with pytest.raises(InvalidParameterError, match="warmup .4. must be smaller"):
        schedules.cosine(1.0, 4, warmup=4)


def test_learning_rate_scheduler_sets_and_logs_the_rate(backend: Any) -> None:
    model = _model()
    opt = mlcore.SGD(model.parameters(), lr=1.0)
    sched = cb.LearningRateScheduler(schedules.step(0.2, gamma=0.5, every=1))
    h = model.fit(X, Y, epochs=3, optimizer=opt, callbacks=[sched], **FIT)
    assert h["lr"] == [0.2, 0.1, 0.05] and opt.lr == 0.05
    keras_style = cb.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    h = model.fit(X, Y, epochs=2, optimizer=opt, callbacks=[keras_style], **FIT)
    assert h["lr"] == [0.025, 0.0125]


def test_adam_follows_a_changed_learning_rate(backend: Any) -> None:
    torch = pytest.importorskip("torch")
    from mlcore.layers import Parameter

    start = np.linspace(-1, 1, 5)
    p, t = Parameter(backend.asarray(start.copy())), torch.tensor(start, requires_grad=True)
    ours, ref = mlcore.Adam([p], lr=0.1), torch.optim.Adam([t], lr=0.1)
    for lr in (0.1, 0.05, 0.05, 0.2):
        ours.lr = lr
        ref.param_groups[0]["lr"] = lr
        g = np.cos(start * lr)
        p.grad, t.grad = backend.asarray(g), torch.from_numpy(g)
        ours.step()
        ref.step()
    np.testing.assert_allclose(host(backend, p.value), t.detach().numpy(), rtol=1e-12)


def test_reduce_lr_on_plateau(backend: Any) -> None:
    model = _model()
    opt = mlcore.SGD(model.parameters(), lr=1e-12)  # the loss cannot improve by 1e-4
    plateau = cb.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, cooldown=1)
    h = model.fit(X, Y, epochs=8, optimizer=opt, callbacks=[plateau], **FIT)
    # as Keras: reduced after epochs 2, 4 and 6 (patience 2, then 1 epoch of cooldown)
    assert h["lr"] == [1e-12, 1e-12, 1e-12, 5e-13, 5e-13, 2.5e-13, 2.5e-13, 1.25e-13]
    with pytest.raises(InvalidParameterError, match=r"factor must be in \(0, 1\)"):
        cb.ReduceLROnPlateau(factor=2.0)


def test_csv_logger_writes_one_row_per_epoch(backend: Any, tmp_path: Any) -> None:
    path = tmp_path / "log.csv"
    model = _model()
    h = model.fit(X, Y, epochs=3, metrics=["auc"], callbacks=[cb.CSVLogger(path)], **FIT)
    model.fit(X, Y, epochs=5, initial_epoch=3, metrics=["auc"],
              callbacks=[cb.CSVLogger(path, append=True)], **FIT)
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert float(rows[2]["auc"]) == pytest.approx(h["auc"][2])


# -- round 3: arguments checked when built, late errors made early and clear -------------------
@pytest.mark.parametrize(("make", "match"), [
    (lambda: cb.EarlyStopping(min_delta=float("nan")), "min_delta must be a finite number"),
    (lambda: cb.ReduceLROnPlateau(patience="2"), "patience must be an integer >= 0"),
    (lambda: cb.ReduceLROnPlateau(cooldown=-1), "cooldown must be an integer >= 0"),
    (lambda: cb.ReduceLROnPlateau(min_lr=float("inf")), "min_lr must be in"),
    (lambda: cb.CSVLogger("log.csv", separator=";;"), "separator must be one character"),
    (lambda: cb.ModelCheckpoint("ck-{epoch"), "not a valid format string"),
    (lambda: cb.ModelCheckpoint("ck-{0}"), "fields must name 'epoch'"),
    (lambda: cb.EarlyStopping(restore_best_weights="yes"), "must be True or False"),
])
def test_callback_arguments_are_checked_when_built(make: Any, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        make()


def test_numpy_numbers_are_accepted_by_callbacks_and_schedules() -> None:
    assert cb.ReduceLROnPlateau(factor=np.float32(0.5), patience=np.int64(2)).patience == 2
    assert cb.EarlyStopping(patience=np.int64(3), min_delta=np.float32(0.1)).patience == 3
    assert schedules.step(np.float32(0.1), every=np.int64(2))(2) == pytest.approx(0.01)
    model = _model()
    h = model.fit(X, Y, epochs=2, callbacks=[cb.LearningRateScheduler(
        lambda e: np.float32(0.01))], **FIT)
    assert h["lr"] == [pytest.approx(0.01)] * 2


def test_one_callback_not_in_a_list_is_named() -> None:
    with pytest.raises(InvalidParameterError, match=r"callbacks must be a list.*callbacks=\["):
        _model().fit(X, Y, epochs=1, callbacks=cb.EarlyStopping(monitor="loss"), **FIT)


def test_early_stopping_min_delta_nan_no_longer_stops_early() -> None:
    with pytest.raises(InvalidParameterError, match="min_delta"):
        cb.EarlyStopping(monitor="loss", min_delta=math.nan)


def test_a_checkpoint_path_field_fit_does_not_report_is_named(tmp_path: Any) -> None:
    ck = cb.ModelCheckpoint(tmp_path / "ck-{val_auc:.3f}.safetensors", monitor="loss")
    with pytest.raises(InvalidParameterError, match=r"\{val_auc\}, which fit does not report; "
                                                    r"available: .*loss"):
        _model().fit(X, Y, epochs=1, callbacks=[ck], **FIT)


def test_csv_logger_append_with_other_columns_keeps_every_column(tmp_path: Any) -> None:
    path = tmp_path / "log.csv"
    model = _model()
    model.fit(X, Y, epochs=2, callbacks=[cb.CSVLogger(path)], **FIT)
    model.fit(X, Y, epochs=4, initial_epoch=2, validation_data=(X, Y),
              callbacks=[cb.CSVLogger(path, append=True)], **FIT)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0]["val_loss"] == "" and rows[3]["val_loss"] != ""
    assert all(r["loss"] for r in rows)
    assert float(rows[3]["loss"]) == pytest.approx(model.evaluate(X, Y)["loss"], rel=0.5)
