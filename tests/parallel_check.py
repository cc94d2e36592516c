"""Run by tests/test_parallel.py in a subprocess, with 8 simulated CPU devices.

XLA_FLAGS is set by the caller before JAX starts. Prints one JSON object with what the
test checks.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from companion import mlp, parallel, sgd


def max_diff(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(jnp.abs(u - v).max()) for u, v in pairs)


def main():
    assert jax.device_count() == 8, jax.devices()
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    x = rng.random((40 * 64, 784), dtype=np.float32)
    y = rng.integers(0, 10, 40 * 64).astype(np.int32)
    init = mlp.init_params([784, 64, 10], jax.random.PRNGKey(516))

    single = jax.tree.map(jnp.array, init)
    dp, sm = parallel.replicate(init, mesh), parallel.replicate(init, mesh)
    dp_step, sm_step = (
        parallel.data_parallel_sgd_step(mesh),
        parallel.shard_map_sgd_step(mesh),
    )
    single_step = jax.jit(sgd.sgd_update)
    losses = {"single": [], "dp": [], "shard_map": []}
    for i in range(40):
        xb, yb = x[i * 64 : (i + 1) * 64], y[i * 64 : (i + 1) * 64]
        xs, ys = parallel.shard_batch((xb, yb), mesh)
        single, l1 = single_step(single, xb, yb, 0.1)
        dp, l2 = dp_step(dp, xs, ys, 0.1)
        sm, l3 = sm_step(sm, xs, ys, 0.1)
        losses["single"].append(float(l1))
        losses["dp"].append(float(l2))
        losses["shard_map"].append(float(l3))

    hlo = dp_step.lower(dp, xs, ys, 0.1).compile().as_text()
    try:
        parallel.shard_batch((x[:100], y[:100]), mesh)
        error = None
    except ValueError as e:
        error = str(e)
    print(
        json.dumps(
            {
                "losses": losses,
                "param_diff_dp": max_diff(dp, single),
                "param_diff_shard_map": max_diff(sm, single),
                "all_reduce_in_hlo": "all-reduce" in hlo,
                "x_sharding": str(tuple(xs.sharding.spec)),
                "params_sharding": str(tuple(dp[0][0].sharding.spec)),
                "shard_shapes": sorted(
                    {tuple(s.data.shape) for s in xs.addressable_shards}
                ),
                "error": error,
            }
        )
    )


# not on import (pytest --doctest-modules imports every file in tests/)
if __name__ == "__main__":
    main()
