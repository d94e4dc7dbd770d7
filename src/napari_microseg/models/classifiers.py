"""Image and object classifiers ([R] whole images, [T] object crops).

Every network here has a ``features`` part (the convolutional base) and a
``head`` part (dense / 1x1 layers); fine-tuning with a frozen conv base freezes
``features``. Outputs are logits: one logit (sigmoid) for binary networks,
``n_classes`` logits (softmax) otherwise.

Architectures registered in :mod:`napari_microseg.models.registry`:

``"vgg16_like"`` (:class:`VGG16Like`)
    METHODS [R]: conv 64,64 | 128,128 | 256x3 | 512x3 | 512x3, 3x3 'same', ReLU,
    2x2 max-pool after every block; dense 4096, 4096, 1 (sigmoid). With a 39x42x1
    input the stated "~40 M parameters" is matched only when the pooling keeps the
    border (Keras ``padding='same'``, i.e. ``ceil_mode=True``):
    39x42 -> 20x21 -> 10x11 -> 5x6 -> 3x3 -> 2x2, flatten 2x2x512 = 2048, giving
    39,891,649 parameters. Floor pooling (Keras ``'valid'``) flattens 1x1x512 and
    gives 33.6 M, so ``ceil_mode=True`` is the default (``pool_ceil``).
``"small_cnn"`` (:class:`SmallCNN`)
    METHODS [R]: conv32, conv32 ('same'); pool; conv64, conv64 ('valid'); dropout .2;
    pool; conv128, conv128 ('valid'); dropout .2; pool; dense 256; dropout .2; dense 1;
    swish (SiLU) activations. With 39x42x1 input and floor pooling:
    39x42 -> 19x21 -> 15x17 -> 7x8 -> 3x4 -> 1x2, flatten 256, 352,481 parameters
    (the stated "~352 k"); METHODS does not say the padding of the conv128 pair, and
    'valid' is the reading that gives 352 k.
``"lipnet"`` (:class:`LipNet`)
    METHODS [T]: LipNet-k with k = 1, 2, 4, 6 conv layers of ``filters`` (32) channels,
    3x3 'same', ReLU, in blocks of two convs (LipNet-1: one block of one conv), each
    block followed by 2x2 max-pool + dropout; then one dense layer to the
    ``n_classes`` softmax outputs. ``all_conv=True`` gives LipNet-kc: the second conv
    of each block has stride 2 instead of the pooling, and the dense layer is a 1x1
    conv to ``n_classes`` channels followed by global average pooling.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["VGG16Like", "SmallCNN", "LipNet", "count_parameters", "CLASSIFIER_ARCHITECTURES"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def _pooled(n: int, times: int, ceil: bool) -> int:
    for _ in range(times):
        n = math.ceil(n / 2) if ceil else n // 2
    return n


class VGG16Like(nn.Module):
    """VGG16-like whole-image classifier ([R]).

    Parameters
    ----------
    input_size : (H, W) of the input crop in pixels (default 39 x 42).
    in_channels : input channels (1 for grey response images).
    n_classes : 1 -> one logit (binary, sigmoid); >= 2 -> softmax logits.
    blocks : conv channels per block (default VGG16: 64,64 | 128,128 | 256x3 | 512x3 | 512x3).
    dense : hidden dense sizes (default 4096, 4096).
    dropout : dropout after each hidden dense layer (METHODS gives none; default 0).
    pool_ceil : keep the border row/column when pooling odd sizes (Keras 'same' pooling);
        True matches the stated ~40 M parameters.
    """

    def __init__(self, input_size: Sequence[int] = (39, 42), in_channels: int = 1, n_classes: int = 1,
                 blocks: Sequence[Sequence[int]] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
                 dense: Sequence[int] = (4096, 4096), dropout: float = 0.0, pool_ceil: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c = int(in_channels)
        for block in blocks:
            for out_c in block:
                layers += [nn.Conv2d(c, int(out_c), 3, padding=1), nn.ReLU(inplace=True)]
                c = int(out_c)
            layers.append(nn.MaxPool2d(2, ceil_mode=bool(pool_ceil)))
        self.features = nn.Sequential(*layers)
        h = _pooled(int(input_size[0]), len(blocks), pool_ceil)
        w = _pooled(int(input_size[1]), len(blocks), pool_ceil)
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(input_size)} is too small for {len(blocks)} poolings")
        head: list[nn.Module] = [nn.Flatten()]
        n = c * h * w
        for units in dense:
            head += [nn.Linear(n, int(units)), nn.ReLU(inplace=True)]
            if dropout:
                head.append(nn.Dropout(float(dropout)))
            n = int(units)
        head.append(nn.Linear(n, int(n_classes)))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """The small [R] network (swish activations, ~352 k parameters for 39 x 42 x 1).

    Parameters
    ----------
    input_size : (H, W) of the input crop (default 39 x 42).
    in_channels : input channels.
    n_classes : 1 -> one logit (binary); >= 2 -> softmax logits.
    filters : channels of the three conv pairs (default 32, 64, 128).
    dense : hidden dense units (default 256).
    dropout : dropout rate (default 0.2, as in METHODS).
    """

    def __init__(self, input_size: Sequence[int] = (39, 42), in_channels: int = 1, n_classes: int = 1,
                 filters: Sequence[int] = (32, 64, 128), dense: int = 256, dropout: float = 0.2):
        super().__init__()
        f1, f2, f3 = (int(f) for f in filters)
        act = nn.SiLU
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, f1, 3, padding=1), act(), nn.Conv2d(f1, f1, 3, padding=1), act(),
            nn.MaxPool2d(2),
            nn.Conv2d(f1, f2, 3), act(), nn.Conv2d(f2, f2, 3), act(), nn.Dropout(dropout),
            nn.MaxPool2d(2),
            nn.Conv2d(f2, f3, 3), act(), nn.Conv2d(f3, f3, 3), act(), nn.Dropout(dropout),
            nn.MaxPool2d(2),
        )
        h, w = int(input_size[0]), int(input_size[1])
        h = ((h // 2 - 4) // 2 - 4) // 2
        w = ((w // 2 - 4) // 2 - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(input_size)} is too small for the small net (needs at least 30 x 30)")
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(f3 * h * w, int(dense)), act(), nn.Dropout(dropout),
                                  nn.Linear(int(dense), int(n_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LipNet(nn.Module):
    """LipNet-k object classifier for one-particle crops ([T]).

    Parameters
    ----------
    n_conv : number of 3x3 conv layers: 1, 2, 4 or 6 (blocks of two; 1 = a single conv).
    all_conv : LipNet-kc: stride-2 second conv instead of pooling, 1x1 conv + global
        average pooling instead of the dense layer (needs an even ``n_conv``).
    input_size : (H, W) of the crops (28 x 28; 32 x 32 for LipNet-6 in the study).
    in_channels : input channels.
    n_classes : softmax outputs (3 in the study).
    filters : conv channels (32).
    dropout : dropout after each block (METHODS gives none; default 0.25).
    dense_units : optional hidden dense layer before the output (0 = none, as in the
        study's "one dense layer").
    """

    def __init__(self, n_conv: int = 4, all_conv: bool = False, input_size: Sequence[int] = (28, 28),
                 in_channels: int = 1, n_classes: int = 3, filters: int = 32, dropout: float = 0.25,
                 dense_units: int = 0):
        super().__init__()
        n_conv = int(n_conv)
        if n_conv < 1:
            raise ValueError("n_conv must be >= 1")
        if all_conv and n_conv % 2:
            raise ValueError("the all-conv variant needs an even number of conv layers")
        per_block = [1] if n_conv == 1 else [2] * (n_conv // 2) + ([1] if n_conv % 2 else [])
        layers: list[nn.Module] = []
        c = int(in_channels)
        h, w = int(input_size[0]), int(input_size[1])
        for n_in_block in per_block:
            for i in range(n_in_block):
                stride = 2 if (all_conv and i == n_in_block - 1) else 1
                layers += [nn.Conv2d(c, filters, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]
                c = filters
            if not all_conv:
                layers.append(nn.MaxPool2d(2))
            h, w = (h + 1) // 2 if all_conv else h // 2, (w + 1) // 2 if all_conv else w // 2
            layers.append(nn.Dropout(dropout))
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(input_size)} is too small for LipNet-{n_conv}")
        self.features = nn.Sequential(*layers)
        if all_conv:
            self.head = nn.Sequential(nn.Conv2d(c, int(n_classes), 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            head: list[nn.Module] = [nn.Flatten()]
            n = c * h * w
            if dense_units:
                head += [nn.Linear(n, int(dense_units)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
                n = int(dense_units)
            head.append(nn.Linear(n, int(n_classes)))
            self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CLASSIFIER_ARCHITECTURES = {"vgg16_like": VGG16Like, "small_cnn": SmallCNN, "lipnet": LipNet}


def _register() -> None:
    from .registry import register_architecture

    for name, builder in CLASSIFIER_ARCHITECTURES.items():
        register_architecture(name, builder)


_register()
