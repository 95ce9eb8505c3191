import itertools

import numpy as np
import pandas as pd
import pytest

from core.schema import COMPETITION, Schema, SchemaError, generic_schema


def test_class_formula_matches_the_organisers_encoding_for_all_18_classes():
    rows = list(itertools.product(["wear", "incorrect", "not_wear"], ["male", "female"], [20, 45, 60]))
    labels = pd.DataFrame(rows, columns=["mask", "gender", "age"])
    out = COMPETITION.add_derived(labels)
    mask = labels["mask"].map({"wear": 0, "incorrect": 1, "not_wear": 2})
    gender = labels["gender"].map({"male": 0, "female": 1})
    age_group = np.select([labels["age"] < 30, labels["age"] < 60], [0, 1], 2)
    assert list(out["class"]) == list(mask * 6 + gender * 3 + age_group)
    assert sorted(out["class"]) == list(range(18))
    assert COMPETITION.n_classes == 18
    assert COMPETITION.class_names()[0] == "wear/male/<30"
    assert COMPETITION.class_names()[17] == "not_wear/female/>=60"


def test_decode_class_inverts_encode():
    classes = np.arange(18)
    decoded = COMPETITION.decode_class(classes)
    assert list(COMPETITION.encode_class(decoded)) == list(classes)


@pytest.mark.parametrize(("age", "group"), [(18, 0), (29, 0), (30, 1), (59, 1), (60, 2)])
def test_age_group_edges(age, group):
    assert COMPETITION.codes(pd.DataFrame({"mask": ["wear"], "gender": ["male"], "age": [age]}))["age_group"][0] == group


def test_training_threshold_moves_bins_without_touching_ages():
    moved = COMPETITION.with_bins("age_group", (30, 58))
    labels = pd.DataFrame({"mask": ["wear"] * 3, "gender": ["male"] * 3, "age": [57, 58, 60]})
    assert list(moved.codes(labels)["age_group"]) == [1, 2, 2]
    assert list(COMPETITION.codes(labels)["age_group"]) == [1, 1, 2]
    assert list(labels["age"]) == [57, 58, 60]
    assert moved.target_classes("age_group") == ("<30", "30-57", ">=58")
    with pytest.raises(SchemaError):
        COMPETITION.with_bins("age_group", (58, 30))


@pytest.mark.parametrize(("attribute", "raw", "message"), [
    ("age", "abc", "not a number"), ("age", "-3", "below the minimum"), ("age", "200", "above the maximum"),
    ("age", "33.5", "whole number"), ("gender", "unknown", "not one of"), ("mask", "", "not one of"),
])
def test_bad_values_are_refused_with_the_attribute_named(attribute, raw, message):
    with pytest.raises(SchemaError, match=message) as error:
        COMPETITION.attribute(attribute).parse(raw)
    assert attribute in str(error.value)


def test_aliases_accept_the_competition_file_names_and_codes():
    mask = COMPETITION.attribute("mask")
    assert mask.parse("incorrect_mask") == "incorrect"
    assert mask.parse("normal") == "not_wear"
    assert COMPETITION.attribute("age").parse("45") == 45
    assert COMPETITION.attribute("age").parse(45.0) == 45


def test_generic_schema_uses_the_same_machinery():
    schema = generic_schema({"species": ["dog", "cat", "cat"], "colour": ["black", "white"]})
    assert schema.targets == ["species", "colour"]
    labels = pd.DataFrame({"species": ["cat", "dog"], "colour": ["white", "black"]})
    assert list(schema.add_derived(labels)["class"]) == [1, 2]
    assert Schema.from_json(schema.to_json()) == schema
    with pytest.raises(SchemaError, match="fewer than two"):
        generic_schema({"label": ["only"]})


def test_schema_json_round_trip_keeps_bins():
    moved = COMPETITION.with_bins("age_group", (30, 58))
    assert Schema.from_json(moved.to_json()) == moved
    assert COMPETITION.targets == ["mask", "gender", "age_group"]


def test_swap_pair_comes_from_the_schema_and_old_schema_json_is_unchanged():
    from dataclasses import replace

    from core.schema import COMPETITION, Schema, SchemaError, generic_schema
    assert COMPETITION.swap_codes("mask") == (1, 2) and COMPETITION.swap_codes("gender") is None
    assert COMPETITION.swap_codes("age_group") is None
    assert "swap_pair" not in COMPETITION.to_json()  # snapshot hashes taken over the schema JSON stay valid
    assert Schema.from_json(COMPETITION.to_json()) == COMPETITION
    off = replace(COMPETITION, attributes=(replace(COMPETITION.attributes[0], swap_pair=None), *COMPETITION.attributes[1:]))
    assert Schema.from_json(off.to_json()).swap_codes("mask") is None
    generic = generic_schema({"a": ["x", "y", "z"]})
    assert generic.swap_codes("a") is None
    paired = replace(generic, attributes=(replace(generic.attributes[0], swap_pair=("z", "x")),))
    assert Schema.from_json(paired.to_json()).swap_codes("a") == (2, 0)
    wrong = replace(generic, attributes=(replace(generic.attributes[0], swap_pair=("x", "w")),))
    with pytest.raises(SchemaError, match="swap_pair names w"):
        wrong.swap_codes("a")
