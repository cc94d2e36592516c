"""Saving and restoring an NNX model and optimizer with orbax-checkpoint (chapter 6).

Orbax writes each checkpoint into a temporary folder and renames it into place only when
it is complete, so a half-written checkpoint (a crash, a full disk) is never listed and
never loaded. Saves are asynchronous: training goes on while the arrays are written.
:class:`Checkpointer` waits for pending saves before it lists, restores or closes, so a
checkpoint is never read while it is being written.
"""

from __future__ import annotations

import os
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

__all__ = ["Checkpointer"]


class Checkpointer:
    """Numbered checkpoints of ``(model, optimizer)`` in one folder.

    Args:
        directory: where the checkpoints go (created if missing); one sub-folder per
            step.
        max_to_keep: keep only the newest this many checkpoints (``None``: keep all).

    Examples:
        >>> import tempfile, optax
        >>> from companion.nnx_models import MLP
        >>> model = MLP([4, 2], rngs=nnx.Rngs(0))
        >>> opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        >>> with Checkpointer(tempfile.mkdtemp()) as ckpt:
        ...     ckpt.save(1, model, opt)
        ...     ckpt.steps()
        [1]
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_to_keep: int | None = 3
    ):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(
        self,
        step: int,
        model: nnx.Module,
        optimizer: nnx.Optimizer,
        *,
        overwrite: bool = False,
    ) -> None:
        """Start saving model and optimizer state as ``step`` (asynchronously).

        Raises:
            FileExistsError: a checkpoint for ``step`` exists and ``overwrite`` is
                False.
        """
        if step in self.steps():
            if not overwrite:
                raise FileExistsError(
                    f"a checkpoint for step {step} already exists in {self.directory}; "
                    f"pass overwrite=True to replace it"
                )
            self._manager.delete(step)
        self._manager.save(
            step, args=ocp.args.StandardSave(nnx.state((model, optimizer)))
        )

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first, once pending saves finish."""
        self._manager.wait_until_finished()
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest(self) -> int | None:
        """The newest complete step, or ``None`` if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def restore(
        self, model: nnx.Module, optimizer: nnx.Optimizer, step: int | None = None
    ) -> int:
        """Load a checkpoint into ``model`` and ``optimizer`` in place; return its step.

        The objects must have the structure of the saved ones (build them as before,
        then restore): their current state is the template that tells orbax the shapes
        and dtypes.

        Raises:
            FileNotFoundError: there is no checkpoint (or none for ``step``).
        """
        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; there are {steps}"
            )
        template = nnx.state((model, optimizer))
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(template))
        nnx.update((model, optimizer), restored)
        return step

    def close(self) -> None:
        """Wait for pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
