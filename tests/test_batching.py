"""Encoders over several photos in one forward (inversion.batching) equal one photo at a time."""
from __future__ import annotations

import torch

from inversion.batching import encode_batch
from inversion.methods import invert
from tiny_models import SIZE, tiny_model_set


def test_encode_batch_equals_one_at_a_time():
    models = tiny_model_set()
    photos = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) * 2 - 1
    batched = encode_batch(models, "e4e", photos)
    assert len(batched) == 3
    for i, got in enumerate(batched):
        alone = invert(models, "e4e", photos[i:i + 1])
        assert got.w_plus.shape == alone.w_plus.shape and got.image.shape == alone.image.shape == (1, 3, SIZE, SIZE)
        torch.testing.assert_close(got.w_plus, alone.w_plus, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.image, alone.image, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batched[0].w_plus, batched[1].w_plus)  # each photo gets its own codes
