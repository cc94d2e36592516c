import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import blobs
from flax import nnx

from companion import nnx_training, optim
from companion.checkpoint import Checkpointer
from companion.nnx_models import MLP
from companion.optim import OptimizerConfig

CFG = OptimizerConfig(peak_lr=1e-2, warmup_steps=3, total_steps=60)


def fresh(seed):
    model = MLP([20, 16, 4], rngs=nnx.Rngs(seed))
    return model, optim.make_optimizer(model, CFG)


def assert_same_state(a, b):
    la, lb = jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_array_equal(u, v)


def test_round_trip_is_bitwise(tmp_path):
    x, y = blobs(256)
    model, opt = fresh(0)
    nnx_training.fit(model, opt, x, y, epochs=1, batch_size=32, progress=False)
    with Checkpointer(tmp_path / "ck") as ckpt:
        ckpt.save(1, model, opt)
        other, other_opt = fresh(99)  # different initial values
        assert ckpt.restore(other, other_opt) == 1
    assert_same_state((model, opt), (other, other_opt))
    np.testing.assert_array_equal(model(x), other(x))
    assert int(other_opt.step[...]) == int(opt.step[...]) == 8


def test_resume_equals_training_straight_through(tmp_path):
    x, y = blobs(256)

    def train(model, opt, epochs, **kwargs):  # the same data, batches and key each time
        nnx_training.fit(
            model,
            opt,
            x,
            y,
            epochs=epochs,
            batch_size=32,
            key=jax.random.key(5),
            progress=False,
            **kwargs,
        )

    straight, straight_opt = fresh(0)
    train(straight, straight_opt, 3)
    first, first_opt = fresh(0)
    with Checkpointer(tmp_path / "ck") as ckpt:
        train(first, first_opt, 1, checkpointer=ckpt)  # interrupted after epoch 1
        resumed, resumed_opt = fresh(7)
        done = ckpt.restore(resumed, resumed_opt)
        train(resumed, resumed_opt, 3, start_epoch=done, checkpointer=ckpt)
        assert ckpt.steps() == [1, 2, 3]
    assert_same_state((straight, straight_opt), (resumed, resumed_opt))


# A save that dies part-way, in a real process: step 1 is saved, then the process exits
# (os._exit: no cleanup, as in a crash) at the k-th rename orbax makes while committing
# step 2 (two on a local disk: the item folder, then the step folder). What is left on
# disk is whatever this orbax version leaves, not a folder name guessed by the test.
CRASHING_SAVE = """
import os, sys
import optax
from flax import nnx
from companion.checkpoint import Checkpointer
from companion.nnx_models import MLP

directory, crash_at = sys.argv[1], int(sys.argv[2])
model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
with Checkpointer(directory) as ckpt:
    ckpt.save(1, model, optimizer)
    ckpt.steps()  # step 1 complete
    renames, real_rename = [], os.rename

    def crashing_rename(src, dst, *args, **kwargs):
        renames.append(src)
        if len(renames) == crash_at:
            os._exit(3)
        return real_rename(src, dst, *args, **kwargs)

    os.rename = crashing_rename
    model.layers[0].kernel[...] = model.layers[0].kernel[...] + 1.0
    ckpt.save(2, model, optimizer)
    ckpt.steps()
"""


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_save_interrupted_by_a_crash_is_never_listed_or_loaded(tmp_path, crash_at):
    out = subprocess.run(
        [sys.executable, "-c", CRASHING_SAVE, str(tmp_path), str(crash_at)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 3, out.stderr  # it died during the save of step 2
    assert sorted(p.name for p in tmp_path.iterdir()) != ["1"]  # debris was left
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps() == [1] and ckpt.latest() == 1
        restored = MLP([20, 16, 4], rngs=nnx.Rngs(7))
        restored_opt = nnx.Optimizer(restored, optax.adam(1e-3), wrt=nnx.Param)
        assert ckpt.restore(restored, restored_opt) == 1
        saved = MLP([20, 16, 4], rngs=nnx.Rngs(0))  # what step 1 holds
        assert_same_state(restored, saved)
        ckpt.save(2, restored, restored_opt)  # the interrupted step can be saved again
        assert ckpt.steps() == [1, 2]


def test_no_temporary_folders_are_left_behind(tmp_path):
    x, y = blobs(256)
    model, opt = fresh(0)
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        nnx_training.fit(
            model, opt, x, y, epochs=3, batch_size=64, checkpointer=ckpt, progress=False
        )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["2", "3"]


def test_saving_over_a_step_is_refused_unless_explicit(tmp_path):
    model, opt = fresh(0)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, model, opt)
        model.layers[0].kernel[...] = jnp.zeros_like(model.layers[0].kernel[...])
        with pytest.raises(
            FileExistsError, match=r"step 1 already exists.*overwrite=True"
        ):
            ckpt.save(1, model, opt)
        ckpt.save(1, model, opt, overwrite=True)
        other, other_opt = fresh(5)
        ckpt.restore(other, other_opt, step=1)
    np.testing.assert_array_equal(other.layers[0].kernel[...], 0.0)


def test_restore_without_a_checkpoint(tmp_path):
    model, opt = fresh(0)
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
            ckpt.restore(model, opt)
        ckpt.save(1, model, opt)
        with pytest.raises(
            FileNotFoundError, match=r"no checkpoint for step 4 .* there are \[1\]"
        ):
            ckpt.restore(model, opt, step=4)
