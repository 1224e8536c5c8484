"""Before/after pairs for the comparison sliders, on the tiny in-memory family (no gradio server)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inversion import session as S
from inversion.before_after import COMPARE_SIZE, before_after
from tiny_models import SIZE, tiny_model_set

HOPPER = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"


def test_pairs_follow_inversion_and_edit(tmp_path):
    models = tiny_model_set()
    state = S.align_photo(S.new_state(), S.open_photo(HOPPER), 0)
    assert before_after(state) == (None, None)
    image = S.model_input(state, SIZE)
    for item in S.run_inversions(models, image, ["psp", "e4e"], file_present=S.file_present_from({})):
        state = S.add_result(state, item)
    first, second = before_after(state, "e4e")
    assert second is None  # nothing edited yet
    seen, recon = first
    assert seen.size == recon.size == (COMPARE_SIZE, COMPARE_SIZE)
    # The "before" is what the model was given (the aligned face at the model's size), enlarged.
    expected_seen = S.to_pil(image).resize((COMPARE_SIZE, COMPARE_SIZE), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(seen, np.int16) - np.asarray(expected_seen, np.int16)).mean() < 1.0
    small_recon = np.asarray(recon.resize((SIZE, SIZE)), np.int16)
    assert np.abs(small_recon - np.asarray(state.results["e4e"].reconstruction, np.int16)).mean() < 3.0
    edited = S.edit_results(models, state, "sefa", 3.0, steps=1, cache_dir=tmp_path)
    first2, second2 = before_after(edited, "e4e")
    assert second2 is not None and second2[0].size == second2[1].size == (COMPARE_SIZE, COMPARE_SIZE)
    assert np.array_equal(np.asarray(second2[0]), np.asarray(first2[1]))  # the same reconstruction on both sliders
    moved = np.abs(np.asarray(second2[1], np.int16) - np.asarray(second2[0], np.int16)).mean()
    assert moved > 1.0  # the edit changed the face (sefa at strength 3)
    assert before_after(edited)[0][1].size == (COMPARE_SIZE, COMPARE_SIZE)  # default: first method (psp)
    with pytest.raises(S.SessionError, match="has no result"):
        before_after(edited, "pti")
