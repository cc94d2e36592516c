import jax
import jax.numpy as jnp
import numpy as np
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
    straight, straight_opt = fresh(0)
    nnx_training.fit(
        straight,
        straight_opt,
        x,
        y,
        epochs=3,
        batch_size=32,
        key=jax.random.key(5),
        progress=False,
    )

    first, first_opt = fresh(0)
    with Checkpointer(tmp_path / "ck") as ckpt:
        nnx_training.fit(
            first,
            first_opt,
            x,
            y,
            epochs=1,
            batch_size=32,
            key=jax.random.key(5),
            checkpointer=ckpt,
            progress=False,
        )
        resumed, resumed_opt = fresh(7)
        done = ckpt.restore(resumed, resumed_opt)
        nnx_training.fit(
            resumed,
            resumed_opt,
            x,
            y,
            epochs=3,
            batch_size=32,
            key=jax.random.key(5),
            start_epoch=done,
            checkpointer=ckpt,
            progress=False,
        )
        assert ckpt.steps() == [1, 2, 3]
    assert_same_state((straight, straight_opt), (resumed, resumed_opt))


def test_half_written_checkpoints_are_never_listed_or_loaded(tmp_path):
    model, opt = fresh(0)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, model, opt)
        assert ckpt.steps() == [1]
        # what an interrupted save leaves behind: orbax's temporary folder, never
        # renamed
        (tmp_path / "2.orbax-checkpoint-tmp-1234").mkdir()
        (tmp_path / "2.orbax-checkpoint-tmp-1234" / "junk").write_text("partial")
        assert ckpt.steps() == [1] and ckpt.latest() == 1
        other, other_opt = fresh(3)
        assert ckpt.restore(other, other_opt) == 1


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
