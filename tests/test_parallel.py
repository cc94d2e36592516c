import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from companion import parallel


@pytest.fixture(scope="module")
def eight_devices():
    """Data-parallel training on 8 simulated CPU devices, in a fresh process (the flag
    must be set before JAX starts)."""
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
    )
    script = Path(__file__).with_name("parallel_check.py")
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_data_parallel_trajectory_equals_single_device(eight_devices):
    single = np.array(eight_devices["losses"]["single"])
    assert len(single) == 40 and single[-1] < single[0]
    np.testing.assert_allclose(eight_devices["losses"]["dp"], single, rtol=1e-5)
    np.testing.assert_allclose(eight_devices["losses"]["shard_map"], single, rtol=1e-5)
    assert (
        eight_devices["param_diff_dp"] < 1e-5
        and eight_devices["param_diff_shard_map"] < 1e-5
    )


def test_shardings_and_the_all_reduce(eight_devices):
    assert eight_devices["all_reduce_in_hlo"]
    assert eight_devices["x_sharding"] == "('data',)"
    assert eight_devices["params_sharding"] == "()"
    assert eight_devices["shard_shapes"] == [[8, 784]]  # 64 examples / 8 devices


def test_indivisible_batch_names_both_numbers(eight_devices):
    assert eight_devices["error"] == (
        "a batch of 100 examples cannot be split evenly over 8 devices: "
        "use a batch size divisible by 8"
    )


def test_make_mesh_refuses_more_devices_than_there_are():
    n = jax.device_count()
    assert parallel.make_mesh().size == n
    with pytest.raises(
        ValueError, match=f"between 1 and the {n} available device\\(s\\); got {n + 1}"
    ):
        parallel.make_mesh(n + 1)
    with pytest.raises(ValueError, match="got 0"):
        parallel.make_mesh(0)


def test_one_device_mesh_is_the_plain_step():
    mesh = parallel.make_mesh(1)
    from companion import mlp, sgd

    params = mlp.init_params([6, 4], jax.random.key(0))
    x = np.ones((8, 6), np.float32)
    y = np.arange(8, dtype=np.int32) % 4
    new, loss = parallel.data_parallel_sgd_step(mesh)(
        parallel.replicate(params, mesh), *parallel.shard_batch((x, y), mesh), 0.1
    )
    ref, ref_loss = sgd.sgd_update(params, x, y, 0.1)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(new[0][0], ref[0][0], rtol=1e-6)
