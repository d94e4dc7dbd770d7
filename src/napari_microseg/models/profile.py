"""Small 1D CNN for thickness profiles, single view or shared-weight multi-view ([P]).

METHODS [P] gives "small 1D CNNs (~12.5 k parameters); two views share the same
conv layers (Siamese), concatenated, then joint layers" and no layer list. The
layers chosen here (registered as ``"profile_cnn"``), for 32 points, 1 view:

branch (shared by all views): Conv1d(1->8, k5) ReLU, Conv1d(8->16, k5) ReLU,
MaxPool(2), Conv1d(16->32, k3) ReLU, MaxPool(2), flatten (32 x 8 = 256),
Linear(256 -> 35) ReLU (each conv followed by batch norm, see ``batch_norm``);
joint: concatenate the views' 35-vectors, Linear(35 x views -> 32) ReLU,
Dropout(0.2), Linear(32 -> n_classes).

That is 12,597 parameters for one view (12,485 without batch norm) and 13,717 for two (the branch is shared;
only the first joint layer grows). ``pooling=False`` drops both poolings (the
study's chirality set-up); the flattened branch is then 4x larger.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["ProfileCNN"]


class ProfileCNN(nn.Module):
    """Siamese 1D CNN: input ``(N, views, points)`` float32, output ``(N, n_classes)`` logits.

    Parameters
    ----------
    n_views : views per particle (1 = single view); all views pass the same branch.
    data_points : samples per profile (32).
    n_classes : softmax outputs.
    channels : conv channels of the branch (8, 16, 32).
    kernel_sizes : conv kernel sizes ('same' padding).
    pooling : 2x max-pool after the 2nd and 3rd conv.
    embedding : units of the branch's dense layer.
    joint_units : units of the joint hidden layer.
    dropout : dropout before the output layer.
    batch_norm : batch normalisation after each conv (not in METHODS; without it the net
        often sits on the 50 % plateau for many epochs, two-view nets especially).
    """

    def __init__(self, n_views: int = 1, data_points: int = 32, n_classes: int = 2,
                 channels: Sequence[int] = (8, 16, 32), kernel_sizes: Sequence[int] = (5, 5, 3),
                 pooling: bool = True, embedding: int = 35, joint_units: int = 32, dropout: float = 0.2,
                 batch_norm: bool = True):
        super().__init__()
        self.n_views = int(n_views)
        layers: list[nn.Module] = []
        c = 1
        n = int(data_points)
        for i, (out_c, k) in enumerate(zip(channels, kernel_sizes)):
            layers.append(nn.Conv1d(c, int(out_c), int(k), padding=int(k) // 2))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(out_c)))
            layers.append(nn.ReLU(inplace=True))
            c = int(out_c)
            if pooling and i >= 1:
                layers.append(nn.MaxPool1d(2))
                n //= 2
        if n < 1:
            raise ValueError(f"{data_points} points are too few for the pooling layers")
        layers += [nn.Flatten(), nn.Linear(c * n, int(embedding)), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)  # the shared branch
        self.head = nn.Sequential(nn.Linear(int(embedding) * self.n_views, int(joint_units)), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(int(joint_units), int(n_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x[:, None]
        if x.shape[1] != self.n_views:
            raise ValueError(f"expected {self.n_views} view(s), got input of shape {tuple(x.shape)}")
        nb, v, p = x.shape
        emb = self.features(x.reshape(nb * v, 1, p)).reshape(nb, -1)
        return self.head(emb)


def _register() -> None:
    from .registry import register_architecture

    register_architecture("profile_cnn", ProfileCNN)


_register()
