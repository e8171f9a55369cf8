"""`icreward.guidance.RewardFunction`: the reward as a differentiable function for generator training loops."""

import pytest
import torch

import icreward
from icreward.guidance import GuidanceError, RewardFunction, parse_value_range, select_frames
from icreward.interface import InputError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run best on one thread


@pytest.fixture(scope="module")
def scorer():
    return icreward.load("default")


def close(actual, expected):
    """Equal up to float32 rounding: the encoder runs in chunks (checkpointing) or in one batch, and batch size
    changes the order of float sums."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-4)


def _clip(b=2, t=6, h=40, w=48, seed=0):
    """Images `[B,3,H,W]` and videos `[B,T,3,H,W]` in [0, 1] that drift away from the image."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    drift = torch.linspace(0.1, 0.5, t)[None, :, None, None, None]
    video = (1 - drift) * image[:, None] + drift * torch.rand(b, t, 3, h, w, generator=g)
    return image, video


def test_value_range_and_layout_give_the_same_rewards(scorer):
    image, video = _clip()
    unit = RewardFunction(scorer, value_range="[0,1]")(image, video)
    signed = RewardFunction(scorer, value_range="[-1, 1]", layout="BCTHW")(
        image * 2 - 1, (video * 2 - 1).transpose(1, 2)
    )
    assert unit.shape == (2,) and unit.dtype == torch.float32
    close(unit, signed)
    assert not torch.allclose(unit[0], unit[1])  # two different clips, two rewards


def test_default_head_is_guidance_and_heads_differ(scorer):
    image, video = _clip()
    fn = RewardFunction(scorer, value_range="0,1")
    assert fn.head == "guidance" and scorer.selected_head == "consistency"  # the scorer itself is left as it was
    consistency = RewardFunction(scorer, value_range="0,1", head="consistency")(image, video)
    close(consistency, scorer(image, video))
    close(fn(image, video), scorer.all_heads(image, video)["guidance"])
    assert not torch.allclose(fn(image, video), consistency)


def test_gradients_reach_frames_and_images_not_the_reward_model(scorer):
    image, video = _clip()
    image.requires_grad_(True)
    video.requires_grad_(True)
    fn = RewardFunction(scorer, value_range="[0,1]")
    fn.loss(image, video).backward()
    assert video.grad is not None and video.grad.abs().sum(dim=(0, 2, 3, 4)).gt(0).all()  # every frame
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in scorer.parameters())


def test_checkpointing_gives_the_same_rewards_and_gradients(scorer):
    image, video = _clip(t=5)
    grads, rewards = [], []
    for checkpointing in (True, False):
        v = video.clone().requires_grad_(True)
        r = RewardFunction(scorer, value_range="[0,1]", checkpointing=checkpointing, checkpoint_chunk=3)(image, v)
        r.sum().backward()
        grads.append(v.grad)
        rewards.append(r.detach())
    close(rewards[0], rewards[1])
    close(grads[0], grads[1])
    assert not isinstance(scorer.backbone, torch.nn.Module) or type(scorer.backbone).__name__ != "_CheckpointedEncoder"


def test_a_metric_is_checkpointed_whole_with_the_same_gradients():
    metric = icreward.load("metric:first-frame-mse")
    image, video = _clip(t=3)
    grads = []
    for checkpointing in (True, False):
        v = video.clone().requires_grad_(True)
        RewardFunction(metric, value_range="[0,1]", checkpointing=checkpointing)(image, v).sum().backward()
        grads.append(v.grad)
    assert grads[0].abs().sum() > 0
    close(grads[0], grads[1])
    assert "forward" not in vars(metric)  # the wrapper is gone after the call


def test_one_frame_and_more_frames_than_max_frames(scorer):
    image, video = _clip(t=9)
    one = RewardFunction(scorer, value_range="[0,1]")(image, video[:, :1])
    assert one.shape == (2,) and torch.isfinite(one).all()
    v = video.clone().requires_grad_(True)
    capped = RewardFunction(scorer, value_range="[0,1]", max_frames=3)(image, v)
    close(capped, RewardFunction(scorer, value_range="[0,1]")(image, video[:, [0, 4, 8]]))
    capped.sum().backward()
    assert v.grad.abs().sum(dim=(0, 2, 3, 4)).gt(0).tolist() == [i in (0, 4, 8) for i in range(9)]


def test_skip_first_scores_frames_after_the_first(scorer):
    image, video = _clip(t=5)
    skipped = RewardFunction(scorer, value_range="[0,1]", skip_first=True)(image, video)
    close(skipped, RewardFunction(scorer, value_range="[0,1]")(image, video[:, 1:]))
    assert select_frames(video, 2, True).shape[1] == 2
    with pytest.raises(GuidanceError, match="skip_first"):
        RewardFunction(scorer, value_range="[0,1]", skip_first=True)(image, video[:, :1])


def test_bf16_autocast_and_half_inputs_give_finite_float32(scorer):
    image, video = _clip()
    fn = RewardFunction(scorer, value_range="[0,1]")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = fn(image, video)
    own = RewardFunction(scorer, value_range="[0,1]", precision="bf16")(image.bfloat16(), video.bfloat16())
    for r in (under_autocast, own):
        assert r.dtype == torch.float32 and torch.isfinite(r).all()
        torch.testing.assert_close(r, fn(image, video), rtol=0.1, atol=0.1)


def test_prompts_reach_the_guidance_head(scorer):
    image, video = _clip()
    fn = RewardFunction(scorer, value_range="[0,1]")
    close(fn(image, video, "camera pans left"), scorer.all_heads(image, video, ["camera pans left"] * 2)["guidance"])
    with pytest.raises(GuidanceError, match="prompts: one string"):
        fn(image, video, ["a", "b", "c"])
    with pytest.raises(GuidanceError, match="head 'text'"):
        RewardFunction(scorer, value_range="[0,1]", head="text")(image, video)


def test_policy_gradient_form(scorer):
    image, video = _clip()
    fn = RewardFunction(scorer, value_range="[0,1]")
    rewards, info = fn.policy_gradient_fn()(video, None, [{"image": image[0]}, {"image": image[1]}])
    close(rewards, fn(image, video).detach())
    assert not rewards.requires_grad and info["head"] == "guidance"
    with pytest.raises(GuidanceError, match="metadata"):
        fn.policy_gradient_fn()(video, None, [{}, {}])


def test_clear_errors(scorer):
    image, video = _clip()
    with pytest.raises(TypeError, match="value_range"):
        RewardFunction(scorer)  # the range is declared, never guessed
    with pytest.raises(GuidanceError, match="value_range"):
        RewardFunction(scorer, value_range="0-255")
    with pytest.raises(GuidanceError, match="layout"):
        RewardFunction(scorer, value_range="[0,1]", layout="BHWC")
    with pytest.raises(GuidanceError, match="max_frames"):
        RewardFunction(scorer, value_range="[0,1]", max_frames=0)
    with pytest.raises(icreward.interface.IcrewardError, match="no 'sharpness' head"):
        RewardFunction(scorer, value_range="[0,1]", head="sharpness")
    with pytest.raises(InputError, match="layout='BCTHW'"):
        RewardFunction(scorer, value_range="[0,1]")(image, video.transpose(1, 2))
    with pytest.raises(InputError, match="5-D"):
        RewardFunction(scorer, value_range="[0,1]")(image, video[0])
    with pytest.raises(InputError, match=r"value_range='-1,1'"):
        RewardFunction(scorer, value_range="[0,1]")(image, video * 2 - 1)
    assert parse_value_range((-1, 1)) == "-1,1" and parse_value_range("[0, 1]") == "0,1"


def test_gradients_reach_a_video_vae_s_latents(scorer):
    """The training-loop path: a Wan VAE decodes latents to [B,C,T,H,W] in [-1, 1]; the reward of its frames
    (frame 0 skipped, at most 4 frames) sends gradients back to the latents."""
    pytest.importorskip("diffusers")
    from icreward.generation.tiny import tiny_wan_i2v_pipeline

    vae = tiny_wan_i2v_pipeline(seed=0).vae
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    frames = vae.decode(latents, return_dict=False)[0].clamp(-1, 1)  # (1, 3, 5, 32, 32)
    assert frames.shape == (1, 3, 5, 32, 32)
    fn = RewardFunction(scorer, value_range="[-1,1]", layout="BCTHW", skip_first=True, max_frames=4)
    fn.loss(torch.rand(1, 3, 32, 32) * 2 - 1, frames).backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert all(p.grad is None for p in scorer.parameters())
