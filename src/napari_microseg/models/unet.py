"""Configurable 2D U-Net (Ronneberger et al. 2015) used for pixel segmentation.

Shapes: input ``(B, in_channels, H, W)`` float32, output ``(B, n_classes, H, W)``
*logits* (apply sigmoid for one channel, softmax for several). ``H`` and ``W``
need not be multiples of ``2**depth``: the input is reflect-padded internally
(bottom / right, to a multiple of :data:`PAD_MULTIPLE` or ``2**depth`` if larger,
as segmentation pads its tiles) and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: images (tiles) are reflect-padded to a multiple of this many px (or 2**depth if larger) before the network:
#: segmentation's tiles are (inference.tiling.fitted_tile), so a whole image given to the network, an export,
#: or predict_image is padded alike (at 2**depth = 8 an export differed from segment by up to 0.6 in probability)
PAD_MULTIPLE = 16
from torch import nn

__all__ = ["UNet", "ConvBlock"]


def _activation(name: str) -> nn.Module:
    name = name.lower()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    raise ValueError(f"unknown activation {name!r}: use 'relu' or 'elu'")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions (+ optional batch norm) with an activation; dropout between them."""

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = True, dropout: float = 0.0, activation: str = "relu"):
        layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers.append(nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(_activation(activation))
        super().__init__(*layers)


class _Up(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, upsampling: str, **block_kw):
        super().__init__()
        if upsampling == "transpose":
            self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        elif upsampling == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, out_ch, kernel_size=1),
            )
        else:
            raise ValueError(f"unknown upsampling {upsampling!r}: use 'transpose' or 'bilinear'")
        self.block = ConvBlock(2 * out_ch, out_ch, **block_kw)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """2D U-Net with concatenated skip connections.

    Parameters
    ----------
    in_channels : number of image channels (1 for grey images).
    n_classes : number of output channels (1 for binary, K for softmax over K classes).
    depth : number of 2x2 max-poolings (levels below the top one). Filters double per level.
    base_filters : filters of the first level (64 in [N], 32 in [C]).
    batch_norm : batch normalisation after each convolution.
    dropout : channel-dropout probability between the two convolutions of each block.
    activation : ``"relu"`` or ``"elu"``.
    upsampling : ``"transpose"`` (2x2 transposed convolution) or ``"bilinear"`` (+ 1x1 conv).

    Weights use He (Kaiming normal) initialisation. ``forward`` returns logits of shape
    ``(B, n_classes, H, W)`` for any ``H, W >= 1``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 1,
        depth: int = 4,
        base_filters: int = 64,
        batch_norm: bool = True,
        dropout: float = 0.05,
        activation: str = "relu",
        upsampling: str = "transpose",
    ):
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes)
        self.depth = int(depth)
        block_kw = dict(batch_norm=batch_norm, dropout=dropout, activation=activation)
        filters = [base_filters * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList()
        ch = in_channels
        for f in filters:
            self.encoder.append(ConvBlock(ch, f, **block_kw))
            ch = f
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            _Up(filters[i + 1], filters[i], upsampling, **block_kw) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(filters[0], n_classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nonlinearity = "relu"
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=nonlinearity)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def encoder_modules(self) -> list[nn.Module]:
        """Modules of the contracting path (frozen by ``freeze_encoder``)."""
        return list(self.encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = max(2**self.depth, PAD_MULTIPLE)  # as the tiles of segmentation: the same padding, the same output
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect padding needs pad < size; fall back to replicate for tiny inputs
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, skip in zip(self.decoder, reversed(skips)):
            x = up(x, skip)
        x = self.head(x)
        return x[..., :h, :w]
