"""Properties of uniform frame sampling (icreward.media.sample_indices) for any video length and frame count."""

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from icreward.media import sample_indices

N_FRAMES = st.one_of(st.integers(1, 40), st.integers(1, 5000))
NUM_FRAMES = st.integers(1, 64)


@settings(max_examples=60)
@given(N_FRAMES, NUM_FRAMES)
def test_sampled_indices_are_sorted_in_range_and_exactly_num_frames(n_frames, num_frames):
    idx = sample_indices(n_frames, num_frames)
    assert len(idx) == num_frames and all(isinstance(i, int) for i in idx)
    assert idx == sorted(idx) and 0 <= idx[0] and idx[-1] <= n_frames - 1
    if num_frames >= 2:
        assert idx[0] == 0 and idx[-1] == n_frames - 1  # first and last frames are always kept
    else:
        assert idx == [0]


@settings(max_examples=60)
@given(N_FRAMES, NUM_FRAMES)
def test_sampling_is_uniform(n_frames, num_frames):
    idx = sample_indices(n_frames, num_frames)
    for i, index in enumerate(idx):  # each index is the nearest frame to its evenly spaced position
        position = Fraction(n_frames - 1) * i / (num_frames - 1) if num_frames > 1 else Fraction(0)
        assert abs(index - position) <= Fraction(1, 2) + Fraction(1, 10**9)
    gaps = [b - a for a, b in zip(idx, idx[1:], strict=False)]
    if gaps:
        assert max(gaps) - min(gaps) <= 1  # steps differ by at most one frame


@settings(max_examples=60)
@given(N_FRAMES, NUM_FRAMES)
def test_long_videos_give_distinct_frames_and_short_ones_repeat_every_frame(n_frames, num_frames):
    idx = sample_indices(n_frames, num_frames)
    if n_frames >= num_frames:
        assert len(set(idx)) == num_frames  # no frame twice when there are enough
    if n_frames == num_frames:
        assert idx == list(range(n_frames))
    if n_frames <= num_frames:
        assert set(idx) == set(range(n_frames))  # no frame skipped when there are too few
