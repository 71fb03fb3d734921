"""Real transformers checkpoints (tiny HF GPT-2 and BERT, random weights, made by
tests/fixtures/make_zoo_text.py) loaded into Equinox and Flax NNX twins named like the
`state_dict` (tests/zoo_text_models.py), and exported back: outputs match transformers'
stored ones. GPT-2's `Conv1D` weights are `(in, out)`: a file says so with `layouts=`, a
live `nn.Module` by its types, and a file read without either is refused, never loaded
transposed (`attn.c_proj` is square). GPT-2's head is tied: the file stores it once, as
`transformer.wte.weight`. The live tests need torch and transformers (skipped in CI)."""

from __future__ import annotations

import importlib.util
import re

import equinox as eqx
import jax
import numpy as np
import pytest
from flax import nnx
from load_models import FIXTURES
from safetensors.numpy import load_file
from zoo_text_models import (
    BERT_FILE,
    CONV1D_LAYOUTS,
    GPT2_FILE,
    EqxBertModel,
    EqxGPT2LMHeadModel,
    NnxBertModel,
    NnxGPT2LMHeadModel,
    io,
)

import treewalk as tw

TOL = dict(atol=1e-4, rtol=1e-4)
CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")
#: The Equinox twin has no `lm_head`: the live module's tied copy is skipped.
NO_HEAD = [(r"^lm_head/", None)]

# Abstract twins (built without initialising weights): tw.load materialises them.
TWINS = {
    "gpt2": {
        "equinox": lambda: eqx.filter_eval_shape(EqxGPT2LMHeadModel, jax.random.key(0)),
        "nnx": lambda: nnx.eval_shape(lambda: NnxGPT2LMHeadModel(nnx.Rngs(0))),
    },
    "bert": {
        "equinox": lambda: eqx.filter_eval_shape(EqxBertModel, jax.random.key(0)),
        "nnx": lambda: nnx.eval_shape(lambda: NnxBertModel(nnx.Rngs(0))),
    },
}
FRAMEWORKS = ["equinox", "nnx"]

# One compiled forward per twin class, shared by the tests (eager dispatch is slower).
_eqx_apply = eqx.filter_jit(lambda model, *args: model(*args))
_nnx_apply = nnx.jit(lambda model, *args: model(*args))


def apply(model, *args):
    run = _nnx_apply if isinstance(model, nnx.Module) else _eqx_apply
    return jax.tree_util.tree_map(np.asarray, run(model, *args))


def gpt2_checked(model) -> None:
    x = io("gpt2")
    np.testing.assert_allclose(apply(model, x["input_ids"]), x["logits"], **TOL)


BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def bert_checked(model) -> None:
    x = io("bert")
    hidden, pooled = apply(model, *(x[k] for k in BERT_INPUTS))
    np.testing.assert_allclose(hidden, x["last_hidden_state"], **TOL)
    np.testing.assert_allclose(pooled, x["pooler_output"], **TOL)


def export_gpt2(model) -> dict[str, np.ndarray]:
    """`tw.export` in the file's layout: the Conv1D weights `(in, out)`."""
    return tw.export(model, convention="torch", layouts=CONV1D_LAYOUTS)


# ---------------------------------------------------------------------------------------
# GPT-2 from the file


def test_gpt2_equinox_loads_from_the_file_with_conv1d_layouts():
    model = tw.load(
        TWINS["gpt2"]["equinox"](), GPT2_FILE, convention="torch", layouts=CONV1D_LAYOUTS
    )
    gpt2_checked(model)


def test_gpt2_nnx_tie_loads_from_the_files_one_key():
    # The file holds the tied embedding once, as transformer.wte.weight; the NNX twin's one
    # shared Embed is both transformer.wte and lm_head.
    model = tw.load(TWINS["gpt2"]["nnx"](), GPT2_FILE, convention="torch", layouts=CONV1D_LAYOUTS)
    assert model.lm_head is model.transformer.wte
    gpt2_checked(model)


def test_gpt2_nnx_tie_loads_from_either_key_and_refuses_two_that_differ():
    file = load_file(str(GPT2_FILE))
    head = {("lm_head.weight" if k == "transformer.wte.weight" else k): v for k, v in file.items()}
    model = tw.load(TWINS["gpt2"]["nnx"](), head, convention="torch", layouts=CONV1D_LAYOUTS)
    assert model.lm_head is model.transformer.wte
    gpt2_checked(model)
    both = {**file, "lm_head.weight": file["transformer.wte.weight"] + 1}
    with pytest.raises(tw.LoadError, match="a tie.*hold different values"):
        tw.load(TWINS["gpt2"]["nnx"](), both, convention="torch", layouts=CONV1D_LAYOUTS)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gpt2_conv1d_weights_without_layouts_are_refused_never_loaded_transposed(framework):
    twin = TWINS["gpt2"][framework]()
    # Nothing says the file's Conv1D weights are (in, out): the wide ones look the other
    # way round, so nothing loads, the square attn.c_proj (32, 32) included.
    with pytest.raises(
        tw.LoadError, match=r"c_attn/(weight|kernel)' <- .*source shape \(32, 96\)"
    ):
        tw.load(twin, GPT2_FILE, convention="torch")
    # A rule forgetting c_proj: the wide mlp.c_proj (128, 32) still gives it away.
    with pytest.raises(tw.LoadError, match=r"mlp\.c_proj\.weight': source shape \(128, 32\)") as e:
        tw.load(twin, GPT2_FILE, convention="torch", layouts={r"c_(attn|fc)/weight$": "io"})
    assert "attn.c_proj" not in str(e.value)  # the square one fits either way round


def test_gpt2_a_transposed_square_conv1d_shows_in_the_outputs():
    # A rule that names every wide Conv1D but not attn.c_proj loads that one as a Linear's
    # (out, in), i.e. transposed: nothing in a file can tell. The fixture catches it.
    wide_only = {r"(c_attn|c_fc|mlp/c_proj)/weight$": "io"}
    model = tw.load(TWINS["gpt2"]["equinox"](), GPT2_FILE, convention="torch", layouts=wide_only)
    with pytest.raises(AssertionError):
        gpt2_checked(model)


# ---------------------------------------------------------------------------------------
# GPT-2 export


def test_gpt2_equinox_exports_the_files_keys_and_values():
    model = tw.load(
        TWINS["gpt2"]["equinox"](), GPT2_FILE, convention="torch", layouts=CONV1D_LAYOUTS
    )
    file = load_file(str(GPT2_FILE))
    plain = tw.export(model, convention="torch")
    assert set(plain) == set(file)  # no lm_head: the file has none either
    # A plain Linear exports (out, in): a Conv1D's (in, out) transposed, the square one too.
    for key, array in plain.items():
        np.testing.assert_array_equal(array, file[key].T if CONV1D.search(key) else file[key])
    out = export_gpt2(model)
    assert set(out) == set(file)
    for key, array in file.items():
        np.testing.assert_array_equal(out[key], array, err_msg=key)


def test_gpt2_nnx_exports_the_files_values_with_the_tie_at_both_keys():
    model = tw.load(TWINS["gpt2"]["nnx"](), GPT2_FILE, convention="torch", layouts=CONV1D_LAYOUTS)
    file = load_file(str(GPT2_FILE))
    out = export_gpt2(model)
    tied = {"transformer.wte.weight", "lm_head.weight"}
    assert set(out) == set(file) | tied  # as a PyTorch state_dict lists a tie: at both keys
    for key in out:
        want = file["transformer.wte.weight"] if key in tied else file[key]
        np.testing.assert_array_equal(out[key], want, err_msg=key)


# ---------------------------------------------------------------------------------------
# BERT from the file, and exported back


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bert_loads_from_the_file(framework):
    bert_checked(tw.load(TWINS["bert"][framework](), BERT_FILE, convention="torch"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bert_exports_the_files_keys_and_values(framework):
    model = tw.load(TWINS["bert"][framework](), BERT_FILE, convention="torch")
    file, out = load_file(str(BERT_FILE)), tw.export(model, convention="torch")
    assert set(out) == set(file)
    for key, array in file.items():
        np.testing.assert_array_equal(out[key], array, err_msg=key)
    bert_checked(tw.load(TWINS["bert"][framework](), out, convention="torch"))


def test_bert_square_weights_are_never_guessed_without_the_files_convention():
    # query/key/value/dense are (32, 32). With no convention= the file is taken to be in
    # the destination's: for NNX nothing matches (weight is not kernel) and the error
    # says convention='torch', rather than loading the square kernels untransposed.
    with pytest.raises(tw.LoadError, match=r"needs convention='torch'"):
        tw.load(TWINS["bert"]["nnx"](), BERT_FILE)
    # Equinox's names are PyTorch's, so the keys match, but the 9 square weights fit a
    # Flax kernel's (in, out) too: undecided, not guessed. The wide ones decide nothing.
    with pytest.raises(tw.LoadError, match=r"9 undecided") as e:
        tw.load(TWINS["bert"]["equinox"](), BERT_FILE)
    assert "'pooler.dense.weight': the source's convention was not given" in str(e.value)
    assert "intermediate" not in str(e.value)


def test_bert_fixture_checks_the_mask_the_norms_and_the_token_types():
    x, file = io("bert"), load_file(str(BERT_FILE))
    assert (x["attention_mask"] == 0).any() and (x["token_type_ids"] == 1).any()
    for key, array in file.items():
        if "LayerNorm.weight" in key:
            assert np.abs(array - 1).max() > 0.1, key
        if "LayerNorm.bias" in key:
            assert np.abs(array).max() > 0.05, key
    model = tw.load(TWINS["bert"]["equinox"](), BERT_FILE, convention="torch")
    unmasked, _ = apply(
        model, x["input_ids"], np.ones_like(x["attention_mask"]), x["token_type_ids"]
    )
    assert np.abs(unmasked - x["last_hidden_state"]).max() > 0.1  # the padding mattered


# ---------------------------------------------------------------------------------------
# Live transformers models (skipped where torch or transformers is not installed)


@pytest.fixture(scope="module")
def hf():
    """tests/fixtures/make_zoo_text.py, which builds the fixtures' models live."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("zoo_text", FIXTURES / "make_zoo_text.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def live_gpt2(hf):
    model = hf.gpt2()
    file = load_file(str(GPT2_FILE))
    for key, tensor in model.state_dict().items():  # the same weights as the file's
        np.testing.assert_array_equal(
            tensor.numpy(), file.get(key, file["transformer.wte.weight"])
        )
    return model


@pytest.fixture(scope="module")
def live_bert(hf):
    return hf.bert()


def torch_state(state: dict[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.from_numpy(v) for k, v in state.items()}


def gpt2_logits(model) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.from_numpy(io("gpt2")["input_ids"])).logits.numpy()


def test_gpt2_equinox_loads_from_the_live_module_and_its_state_dict(live_gpt2):
    twin = TWINS["gpt2"]["equinox"]()
    # The module's types say Conv1D is (in, out); its tied lm_head copy has no destination.
    with pytest.raises(tw.LoadError, match=r"(?s)source keys nothing uses.*'lm_head.weight'"):
        tw.load(twin, live_gpt2)
    gpt2_checked(tw.load(twin, live_gpt2, rename=NO_HEAD))
    sd = live_gpt2.state_dict()
    gpt2_checked(tw.load(twin, sd, convention="torch", layouts=CONV1D_LAYOUTS, rename=NO_HEAD))


def test_gpt2_nnx_loads_from_the_live_module(live_gpt2):
    # The state_dict lists the tie under both keys (one tensor): it fills the one Param.
    model = tw.load(TWINS["gpt2"]["nnx"](), live_gpt2)
    assert model.lm_head is model.transformer.wte
    gpt2_checked(model)


def test_gpt2_nnx_loads_from_the_live_state_dict(live_gpt2):
    sd = live_gpt2.state_dict()
    gpt2_checked(tw.load(TWINS["gpt2"]["nnx"](), sd, convention="torch", layouts=CONV1D_LAYOUTS))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gpt2_export_loads_into_transformers(framework, hf):
    twin = tw.load(
        TWINS["gpt2"][framework](), GPT2_FILE, convention="torch", layouts=CONV1D_LAYOUTS
    )
    fresh = hf.gpt2(seed=1)  # other weights
    # The plain export's Linear (out, in) weights are refused by Conv1D's (in, out) shapes.
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(torch_state(tw.export(twin, convention="torch")), strict=False)
    out = export_gpt2(twin)
    result = fresh.load_state_dict(torch_state(out), strict=False)
    tied = {"transformer.wte.weight", "lm_head.weight"}
    assert not result.unexpected_keys
    assert set(result.missing_keys) == tied - set(out)  # filled through the tie
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    np.testing.assert_allclose(gpt2_logits(fresh), io("gpt2")["logits"], **TOL)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bert_loads_from_the_live_module_and_its_state_dict(framework, live_bert):
    bert_checked(tw.load(TWINS["bert"][framework](), live_bert))
    bert_checked(tw.load(TWINS["bert"][framework](), live_bert.state_dict(), convention="torch"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bert_export_loads_into_transformers(framework, hf):
    import torch

    twin = tw.load(TWINS["bert"][framework](), BERT_FILE, convention="torch")
    fresh = hf.bert(seed=1)
    result = fresh.load_state_dict(torch_state(tw.export(twin, convention="torch")), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    x = io("bert")
    with torch.no_grad():
        out = fresh(**{k: torch.from_numpy(x[k]) for k in BERT_INPUTS})
    np.testing.assert_allclose(out.last_hidden_state.numpy(), x["last_hidden_state"], **TOL)
    np.testing.assert_allclose(out.pooler_output.numpy(), x["pooler_output"], **TOL)
