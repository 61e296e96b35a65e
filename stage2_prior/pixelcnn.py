"""The learned prior: a gated PixelCNN over grids of VQ-VAE codes.

The prior factorises a grid ``z`` of H x W codes in raster order,

    p(z) = prod_{t=1}^{HW} p(z_t | z_1, ..., z_{t-1}),

and one forward pass returns the logits of every factor at once: ``logits[:, :, i, j]``
parameterises p(z_ij | codes before (i, j) in raster order). This needs convolutions that
never look ahead. Following van den Oord et al. (2016), "Conditional Image Generation with
PixelCNN Decoders", two stacks run side by side (p = kernel_size // 2):

* the vertical stack sees whole rows: its kernel covers rows i-p..i and columns j-p..j+p,
  so vertical features at row i depend on rows <= i only;
* the horizontal stack sees the current row: kernel over columns j-p..j-1 in the first
  layer (the current code itself is what is being predicted), j-p..j after that;
* the vertical stack feeds the horizontal one shifted down by one row, so position (i, j)
  receives information from every row above, left and right, and from the positions to
  its left: no blind spot.

Every stack ends each layer in the gated unit ``tanh(a) * sigmoid(b)``, where ``a, b`` are
the two halves of the convolution's output plus, for a class-conditional prior, a learned
per-class bias (the label embedding ``V y`` of the paper). The horizontal stack is
residual (except in the first layer, whose input is the current code) and every layer
sends a 1x1 "skip" projection of its gated features to the output head, which maps their
sum to logits over the K codes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from data.config import PixelCNNConfig

from .common import check_labels


def gate(x: torch.Tensor) -> torch.Tensor:
    """The gated activation: split the channels into halves a, b and return tanh(a) * sigmoid(b)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (row 0 becomes zeros), so row i holds what row i-1 held."""
    return F.pad(x, (0, 0, 1, -1))


def conv(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a convolution to feature maps (B, C, H, W)."""
    return layer(x)


def dense(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The same convolution at one output position, as a matrix product.

    ``x`` (B, C, kh, kw) is exactly the kernel's window (or (B, C) for a 1x1 kernel); the
    result (B, out) equals ``layer(x).flatten(1)``. Sampling uses it: on such tiny inputs a
    matrix product has far less call overhead than a convolution.
    """
    return F.linear(x.flatten(1), layer.weight.flatten(1), layer.bias)


class GatedLayer(nn.Module):
    """One layer of both stacks. With ``c_v, c_h`` the label biases (zero if unconditional):

        v_pre = V * v                      kernel (p+1, k): rows i-p..i, columns j-p..j+p
        v'    = gate(v_pre + c_v)
        h_pre = H * h + W_vh shift_down(v_pre) + c_h
                                           kernel (1, p) over j-p..j-1 if first, else (1, p+1) over j-p..j
        g     = dropout(gate(h_pre))
        h'    = W_res g  (first layer),  h + W_res g  (later layers);  none in the last layer
        s     = W_skip g                   the skip connection to the output head

    The last layer has no ``W_res``: only its skip output reaches the head, and a weight that
    never gets a gradient would also stop data-parallel training (DDP) at its first step.

    The convolutions here do no padding: ``forward`` pads the whole grid; incremental sampling
    calls ``vertical_row`` and ``horizontal_position`` with ``apply=dense`` on the windows it
    cuts itself, one window per output position.
    """

    def __init__(self, hidden: int, kernel_size: int, num_classes: int, dropout: float, first: bool,
                 last: bool = False):
        super().__init__()
        self.p, self.first = kernel_size // 2, first
        self.vertical = nn.Conv2d(hidden, 2 * hidden, (self.p + 1, kernel_size))
        self.horizontal = nn.Conv2d(hidden, 2 * hidden, (1, self.p if first else self.p + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.residual = nn.Conv2d(hidden, hidden, 1) if not last else None
        self.skip = nn.Conv2d(hidden, hidden, 1)
        self.label_bias = nn.Embedding(num_classes, 4 * hidden) if num_classes else None
        self.dropout = nn.Dropout(dropout)

    def label_biases(self, labels: Optional[torch.Tensor]) -> tuple:
        """The per-class gate biases (c_v, c_h), each (B, 2C); zeros when unconditional."""
        if self.label_bias is None:
            return 0.0, 0.0
        return self.label_bias(labels).chunk(2, dim=1)

    def vertical_row(self, v_window: torch.Tensor, c_v, apply=conv) -> tuple[torch.Tensor, torch.Tensor]:
        """(v', W_vh v_pre) from the zero-padded rows above and at the output rows."""
        v_pre = apply(self.vertical, v_window)
        return gate(v_pre + c_v), apply(self.vertical_to_horizontal, v_pre)

    def horizontal_position(self, h_window: torch.Tensor, h: torch.Tensor, v_to_h: torch.Tensor, c_h,
                            apply=conv) -> tuple[torch.Tensor, torch.Tensor]:
        """(h', s) from the left-padded current row, the input h and the vertical stack's contribution."""
        g = self.dropout(gate(apply(self.horizontal, h_window) + v_to_h + c_h))
        if self.residual is None:  # the last layer: nothing reads its horizontal output
            return h, apply(self.skip, g)
        out = apply(self.residual, g)
        return (out if self.first else h + out), apply(self.skip, g)

    def forward(self, v: torch.Tensor, h: torch.Tensor, labels: Optional[torch.Tensor] = None):
        p = self.p
        c_v, c_h = (rearrange(c, "b c -> b c 1 1") if torch.is_tensor(c) else c for c in self.label_biases(labels))
        v_out, v_to_h = self.vertical_row(F.pad(v, (p, p, p, 0)), c_v)
        # First layer: pad p on the left and drop the last column, so column j sees j-p..j-1.
        h_window = F.pad(h, (p, -1 if self.first else 0))
        h_out, skip = self.horizontal_position(h_window, h, shift_down(v_to_h), c_h)
        return v_out, h_out, skip


class GatedPixelCNN(nn.Module):
    """Autoregressive prior over (B, H, W) grids of codes in [0, K); returns logits (B, K, H, W).

    ``num_classes > 0`` makes it class-conditional: ``forward`` then needs ``labels`` (B,)
    in [0, num_classes). Works on any grid size; the receptive field reaches p * layers
    positions up, left and right (p = kernel_size // 2), so choose ``layers`` with
    p * layers >= the grid's width for every earlier code to count. The architecture is a
    ``PixelCNNConfig`` (hidden, layers, kernel_size, dropout; its defaults are the default run's).
    """
    architecture = "pixelcnn"  # its name in stage2.architecture and in checkpoints

    def __init__(self, num_embeddings: int, config: PixelCNNConfig = PixelCNNConfig(), num_classes: int = 0):
        super().__init__()
        c = config
        if c.kernel_size < 3 or c.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and at least 3, got {c.kernel_size}")
        if num_embeddings < 1 or c.hidden < 1 or c.layers < 1 or num_classes < 0:
            raise ValueError("num_embeddings, hidden and layers must be positive, num_classes non-negative")
        self.config, self.num_embeddings, self.num_classes = config, num_embeddings, num_classes
        self.embedding = nn.Embedding(num_embeddings, c.hidden)
        self.layers = nn.ModuleList(GatedLayer(c.hidden, c.kernel_size, num_classes, c.dropout, first=(i == 0),
                                               last=(i == c.layers - 1)) for i in range(c.layers))
        self.head_hidden = nn.Conv2d(c.hidden, c.hidden, 1)
        self.head_out = nn.Conv2d(c.hidden, num_embeddings, 1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, H, W) -> features (B, C, H, W)."""
        return rearrange(self.embedding(codes), "b h w c -> b c h w")

    def head(self, skip: torch.Tensor, apply=conv) -> torch.Tensor:
        """Logits from the summed skip connections: W_out relu(W_hidden relu(sum_l s_l))."""
        return apply(self.head_out, F.relu(apply(self.head_hidden, F.relu(skip))))

    def forward(self, codes: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        labels = check_labels(labels, self.num_classes, codes.shape[0], codes.device)
        v = h = self.embed(codes)
        skip = 0.0
        for layer in self.layers:
            v, h, s = layer(v, h, labels)
            skip = skip + s
        return self.head(skip)

    @torch.no_grad()
    def sample_cached(self, uniforms: torch.Tensor, labels: Optional[torch.Tensor], pick) -> torch.Tensor:
        """Codes (n, H, W) drawn in raster order, computing only what each new position needs.

        Position (i, j) needs, per layer, the horizontal stack's inputs at columns j-p..j of row i
        and the vertical stack's contribution from row i-1. So this keeps, per layer, the last
        p+1 rows of the vertical stack's input and the current row of the horizontal stack's
        input; a new code costs one 1-position pass through the horizontal stacks, and a finished
        row one 1-row pass through the vertical stacks, every convolution evaluated as one matrix
        product per output position (``dense``). ``pick(logits (n, K), uniforms (n,)) -> codes``
        draws a code (``stage2_prior.sampling.inverse_cdf``). Used by ``stage2_prior.sample``.
        """
        n, height, width = uniforms.shape
        p, c = self.layers[0].p, self.embedding.embedding_dim
        like = dict(dtype=self.embedding.weight.dtype, device=uniforms.device)
        biases = [layer.label_biases(labels) for layer in self.layers]  # (c_v, c_h), each (n, 2C) or 0
        row_biases = [repeat(c_v, "n c -> (n w) c", w=width) if torch.is_tensor(c_v) else c_v for c_v, _ in biases]
        v_rows = [torch.zeros(n, c, p + 1, width + 2 * p, **like) for _ in self.layers]  # vertical input, rows i-p..i
        v_to_h = [torch.zeros(n, width, 2 * c, **like) for _ in self.layers]  # W_vh v_pre of row i-1, per column
        codes = torch.zeros(n, height, width, dtype=torch.int64, device=uniforms.device)
        for i in range(height):
            h_rows = [torch.zeros(n, c, 1, p + width, **like) for _ in self.layers]  # horizontal input of row i
            for j in range(width):
                skip = 0.0
                for l, layer in enumerate(self.layers):
                    window = h_rows[l][..., j:j + p + (0 if layer.first else 1)]  # columns j-p..j-1 or j-p..j
                    h, s = layer.horizontal_position(window, h_rows[l][:, :, 0, p + j], v_to_h[l][:, j],
                                                     biases[l][1], apply=dense)
                    if l + 1 < len(self.layers):
                        h_rows[l + 1][:, :, 0, p + j] = h
                    skip = skip + s
                codes[:, i, j] = pick(self.head(skip, apply=dense), uniforms[:, i, j])
                h_rows[0][:, :, 0, p + j] = self.embedding(codes[:, i, j])
            if i + 1 < height:  # row i is complete: its vertical features, for row i+1
                v = self.embed(codes[:, i:i + 1])
                for l, layer in enumerate(self.layers):
                    v_rows[l] = torch.cat([v_rows[l][:, :, 1:], F.pad(v, (p, p))], dim=2)
                    windows = rearrange(F.unfold(v_rows[l], (p + 1, 2 * p + 1)), "n d w -> (n w) d")  # one per column
                    v, to_h = layer.vertical_row(windows, row_biases[l], apply=dense)
                    v, v_to_h[l] = rearrange(v, "(n w) c -> n c 1 w", n=n), rearrange(to_h, "(n w) c -> n w c", n=n)
        return codes
