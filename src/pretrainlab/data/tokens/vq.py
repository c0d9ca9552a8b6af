"""A small VQ-VAE: the tokenizer whose codes a token dataset stores.

van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation Learning", arXiv 1711.00937: an encoder
maps an image to a grid of vectors, each replaced by its nearest codebook entry; a decoder maps the entries back
to pixels. Gradients pass the quantiser straight through; the codebook follows the encoder outputs by
exponential moving averages (the paper's appendix), with dead entries restarted on random encoder outputs so
a small codebook is used whole. SeiT stores ViT-VQGAN codes; at 28-32 px a convolutional VQ-VAE that
downsamples by 4 (a 7x7 or 8x8 grid) is the CPU-sized equivalent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class VQConfig:
    """Args:
        codebook_size: number of codes K (<= 256 stores one byte per code, <= 65,536 two).
        code_dim: size of a codebook vector.
        hidden: convolution width of the encoder and decoder.
        downsample: number of stride-2 stages; the grid is the image size / 2**downsample.
        in_chans: image channels (1 or 3).
        commitment: weight of the commitment loss (0.25 in the paper).
        decay: EMA decay of the codebook (0.99 in the paper).
    """

    codebook_size: int = 256
    code_dim: int = 16
    hidden: int = 32
    downsample: int = 2
    in_chans: int = 1
    commitment: float = 0.25
    decay: float = 0.99

    def __post_init__(self) -> None:
        if not 2 <= self.codebook_size <= 65536:
            raise ValueError(f"codebook_size must be in 2..65536 (stored as uint8 or uint16), got {self.codebook_size}")
        if not 1 <= self.downsample <= 4:
            raise ValueError(f"downsample must be 1..4 stride-2 stages, got {self.downsample}")
        if self.code_dim < 1 or self.hidden < 1 or self.in_chans not in (1, 3):
            raise ValueError("code_dim and hidden must be >= 1 and in_chans 1 or 3")

    def as_dict(self) -> dict:
        return asdict(self)


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EMAQuantizer(nn.Module):
    """Nearest-codebook quantisation with an EMA-updated codebook `embedding` (K, D)."""

    def __init__(self, codebook_size: int, code_dim: int, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("embedding", torch.randn(codebook_size, code_dim) * 0.1)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embedding_sum", self.embedding.clone())
        self.register_buffer("initialised", torch.tensor(False))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> nearest code indices (B, h, w) int64."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B h w, D)
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embedding.t()
                     + self.embedding.pow(2).sum(1)[None])  # (B h w, K)
        return distances.argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> (B, D, h, w) codebook vectors."""
        return self.embedding[codes].permute(0, 3, 1, 2)

    @torch.no_grad()
    def update(self, z: torch.Tensor, codes: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """EMA step of counts and sums; codes that fell out of use restart on random encoder outputs."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if not self.initialised:  # data-dependent start: codes on encoder outputs, not where none ever lands
            picks = torch.randint(0, len(flat), (self.embedding.shape[0],), generator=generator, device=flat.device)
            self.embedding.copy_(flat[picks])
            self.embedding_sum.copy_(flat[picks])
            self.initialised.fill_(True)
            codes = self.codes(z)
        onehot = F.one_hot(codes.reshape(-1), self.embedding.shape[0]).type(flat.dtype)  # (B h w, K)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (total + self.embedding.shape[0] * 1e-5) * total  # Laplace
        used = self.cluster_size > 0
        self.embedding[used] = self.embedding_sum[used] / smoothed[used, None]
        # a code used by less than 3 % of an even share of the cells is dead: restart it on an encoder output
        dead = self.cluster_size < 0.03 * self.cluster_size.mean()
        if dead.any():
            picks = torch.randint(0, len(flat), (int(dead.sum()),), generator=generator, device=flat.device)
            self.embedding[dead] = flat[picks]
            self.embedding_sum[dead] = flat[picks]
            self.cluster_size[dead] = self.cluster_size.mean()


class VQVAE(nn.Module):
    """images (B, C, H, W) in [0, 1] -> codes (B, H / 2**n, W / 2**n) -> reconstructions (B, C, H, W)."""

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden
        down: list[nn.Module] = [nn.Conv2d(config.in_chans, width, 3, padding=1)]
        for _ in range(config.downsample):
            down += [nn.SiLU(), nn.Conv2d(width, width, 4, stride=2, padding=1)]
        # The closing batch norm gives the code vectors unit spread from the first step: with PyTorch's default
        # init their spread over cells starts ~100x below their mean and every cell falls on one code.
        self.encoder = nn.Sequential(*down, ResidualBlock(width), nn.SiLU(), nn.Conv2d(width, config.code_dim, 1),
                                     nn.BatchNorm2d(config.code_dim))
        up: list[nn.Module] = [nn.Conv2d(config.code_dim, width, 3, padding=1), ResidualBlock(width)]
        for _ in range(config.downsample):
            up += [nn.SiLU(), nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)]
        self.decoder = nn.Sequential(*up, nn.SiLU(), nn.Conv2d(width, config.in_chans, 3, padding=1))
        self.quantizer = EMAQuantizer(config.codebook_size, config.code_dim, config.decay)

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantizer.embedding  # (K, D)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> codes (B, h, w) int64."""
        return self.quantizer.codes(self.encoder(images - 0.5))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> images (B, C, H, W), clamped to [0, 1]."""
        return self.decode_vectors(self.quantizer.lookup(codes))

    def decode_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """codebook-space vectors (B, D, h, w) -> images (B, C, H, W), clamped to [0, 1]."""
        return (self.decoder(vectors) + 0.5).clamp(0, 1)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One training step's losses: reconstruction (MSE) + commitment; the codebook moves by EMA."""
        z = self.encoder(images - 0.5)  # (B, D, h, w)
        codes = self.quantizer.codes(z.detach())
        quantized = self.quantizer.lookup(codes)
        if self.training:
            self.quantizer.update(z.detach(), codes, generator)
        commitment = F.mse_loss(z, quantized.detach())
        straight_through = z + (quantized - z).detach()
        reconstruction = F.mse_loss(self.decoder(straight_through) + 0.5, images)
        loss = reconstruction + self.config.commitment * commitment
        used = torch.unique(codes).numel()
        return {"loss": loss, "reconstruction": reconstruction.detach(), "commitment": commitment.detach(),
                "codes_used": torch.tensor(float(used))}
