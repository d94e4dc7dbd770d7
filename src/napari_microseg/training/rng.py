"""torch's global random generator, held by one training at a time.

Weight initialisation, dropout and kornia's augmentations draw from torch's one global
generator (CPU, and CUDA's per device). Two trainings in one process (the Training and the
Classification docks at once) took turns drawing from it, so neither was repeatable from its
seed. A training now draws from it only inside :meth:`HeldGlobalRng.hold`, which holds it
and restores the training's own state (so a training alone draws exactly what it drew before).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

_GLOBAL_RNG_LOCK = threading.RLock()


class HeldGlobalRng:
    """One training's own state of torch's global generator.

    Parameters
    ----------
    seed : the state the first :meth:`hold` starts from (``torch.manual_seed(seed)``).
    device : the torch device the training runs on; a CUDA device's generator is kept too.
    """

    def __init__(self, seed: int, device: Any = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self._seed: int | None = int(seed)
        self._cpu_state = self._device_state = None

    def reseed(self, seed: int) -> None:
        """Start the next :meth:`hold` from ``torch.manual_seed(seed)`` (a new epoch)."""
        self._seed, self._cpu_state, self._device_state = int(seed), None, None

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold torch's global generator for the block, in this training's state; another thread's
        block waits. What the block draws advances this training's state only."""
        import torch

        cuda = self.device.type == "cuda"
        with _GLOBAL_RNG_LOCK:
            if self._seed is not None:
                torch.manual_seed(self._seed % (2**63))
                self._seed = None
            else:
                torch.set_rng_state(self._cpu_state)
                if cuda and self._device_state is not None:
                    torch.cuda.set_rng_state(self._device_state, self.device)
            try:
                yield
            finally:
                self._cpu_state = torch.get_rng_state()
                self._device_state = torch.cuda.get_rng_state(self.device) if cuda else None
