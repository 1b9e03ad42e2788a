"""Stand-ins for CrisisMMD's BERT and MobileNetV2 encoders, referenced by import path
('stub_encoders:text', 'stub_encoders:image') in tests: small, deterministic, no weights."""
import torch
import torch.nn.functional as F

TEXT_DIM = 16
IMAGE_DIM = 12  # 3 channels x 2 x 2 cells

NOT_CALLABLE = 42


def text(s: str) -> torch.Tensor:
    """Character counts hashed into TEXT_DIM bins (by code point), normalised to sum 1."""
    v = torch.zeros(TEXT_DIM)
    for ch in s:
        v[ord(ch) % TEXT_DIM] += 1.0
    return v / max(len(s), 1)


def image(x: torch.Tensor) -> torch.Tensor:
    """The (3, H, W) image average-pooled to 2 x 2 cells per channel, flattened."""
    return F.adaptive_avg_pool2d(x, 2).flatten()
