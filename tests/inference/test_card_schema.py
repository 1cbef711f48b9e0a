"""Model cards are checked as strictly as station.toml: every `decoder` key against its family's
schema, with the key and the reason; a label count that fits another reading is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.inference import decoders as dec
from agent.inference.card import PackageError, parse_card
from agent.inference.package import load_package

from .conftest import FIXTURES

YOLO = json.loads((FIXTURES / "blob-yolo-cn" / "model.json").read_text())
CLASSIFIER = json.loads((FIXTURES / "colour-float" / "model.json").read_text())


def _refusal(card: dict, **decoder: object) -> str:
    changed = json.loads(json.dumps(card))
    changed["decoder"].update(decoder)
    with pytest.raises(PackageError) as caught:
        parse_card(changed, "card")
    return str(caught.value)


def test_a_misspelt_activation_is_refused_with_a_suggestion():
    why = _refusal(YOLO, activation="sigmod")
    assert "decoder.activation: 'sigmod' is not one of" in why and "did you mean 'sigmoid'?" in why


def test_american_normalized_is_refused_not_taken_as_normalised():
    assert "did you mean 'normalised'?" in _refusal(YOLO, coords="normalized")


def test_an_unknown_decoder_key_is_refused():
    why = _refusal(YOLO, layuot="boxes_last")
    assert "decoder.layuot: unknown key; did you mean `layout`?" in why


def test_channel_first_is_refused_not_read_as_the_other_layout():
    why = _refusal(YOLO, layout="channel_first")
    assert "decoder.layout: 'channel_first'" in why and "did you mean 'channels_first'?" in why


def test_a_top_k_that_is_not_a_number_is_refused_with_its_key():
    assert "decoder.top_k: 'three' must be an integer" in _refusal(CLASSIFIER, top_k="three")


def test_a_yolo_card_must_say_whether_boxes_have_objectness():
    card = json.loads(json.dumps(YOLO))
    del card["decoder"]["objectness"]
    with pytest.raises(PackageError, match=r"decoder\.objectness: missing; say true"):
        parse_card(card, "card")


def test_an_unknown_input_key_is_refused():
    card = json.loads(json.dumps(CLASSIFIER))
    card["input"]["colur"] = "RGB"
    with pytest.raises(PackageError, match=r"input\.colur: unknown key; did you mean `colour`\?"):
        parse_card(card, "card")


def test_a_yolo_card_with_one_label_too_few_is_refused_with_plain_numbers(tmp_path: Path):
    """Before: 1 label instead of 2 read as 'with objectness' and then detected nothing."""
    pkg = tmp_path / "yolo"
    shutil.copytree(FIXTURES / "blob-yolo-cn", pkg)
    card = json.loads((pkg / "model.json").read_text())
    card["labels"] = card["labels"][:1]
    card["thresholds"] = {"default": card["thresholds"].get("default", 0.5)}
    card["groups"] = {k: v for k, v in card.get("groups", {}).items() if k in card["labels"]}
    card["selftest"] = []
    (pkg / "model.json").write_text(json.dumps(card))
    with pytest.raises(PackageError) as caught:
        load_package(pkg, xnnpack=False)
    why = str(caught.value)
    assert "but the card lists 1 labels" in why and "which is 2 labels without objectness" in why
    assert "np." not in why and "int32" not in why


def test_every_decoder_family_declares_its_keys_with_help():
    for task in dec.TASKS:
        schema = dec._FAMILIES[task].OPTIONS
        assert all(isinstance(o, dec.Option) and o.help for o in schema.values()), task


json_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)


@given(
    st.sampled_from(dec.TASKS),
    st.dictionaries(
        st.sampled_from(
            sorted({k for t in dec.TASKS for k in dec._FAMILIES[t].OPTIONS} | {"other"})
        ),
        json_values
        | st.lists(json_values, max_size=5)
        | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        max_size=4,
    ),
)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_decoder_object_is_taken_or_refused_naming_its_keys(task, options):
    """What the card check takes, the decoder takes too; what it refuses names decoder.<key>."""
    problems = dec.option_problems(task, options)
    labels = ("a",)
    s = dec.Settings(labels, np.full(1, 0.5), 0.5, 10, (64, 64), options)
    if problems:
        with pytest.raises(dec.DecoderError):
            dec.make_decoder(task, s)
    else:
        dec.make_decoder(task, s)


def _card_with(**top: object):
    card = json.loads(json.dumps(YOLO))
    card.update(top)
    return parse_card(card, "card")


def test_a_card_may_set_its_own_latency_budget_and_minimum_agreement():
    card = _card_with(latency_budget_ms=250, min_agreement=0.8)
    assert card.latency_budget_ms == 250.0
    assert card.min_agreement == 0.8
    assert _card_with().latency_budget_ms is None


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("latency_budget_ms", 0, "not a time"),
        ("latency_budget_ms", "fast", "a number"),
        ("min_agreement", 1.5, "not a share"),
    ],
)
def test_rollout_gates_on_a_card_are_checked(key: str, value: object, reason: str):
    with pytest.raises(PackageError, match=f"{key}.*{reason}"):
        _card_with(**{key: value})
