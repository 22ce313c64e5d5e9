"""Tests of cosam.config: profiles, unknown keys, dotted overrides, value checks, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosam.config import (
    METHOD_PROFILE_OVERRIDES,
    PROFILES,
    Config,
    config_from_file,
    dotted_to_dict,
    make_config,
    merge,
)
from cosam.errors import ConfigError


def _leaves(d: dict, prefix: str = "") -> list:
    out = []
    for k, v in d.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]
    return out


def test_profiles_set_what_they_promise() -> None:
    """Every value a profile sets reaches the Config; smoke is offline and random, cpu/paper pretrained."""
    defaults = dict(_leaves(Config().to_dict()))
    for name, profile in PROFILES.items():
        got = dict(_leaves(make_config(name).to_dict()))
        assert got["profile"] == name
        # the profile, then its adjustment for the default method (cpu tunes sequential's rate)
        adjust = METHOD_PROFILE_OVERRIDES.get(name, {}).get(Config().method, {})
        set_by_profile = dict(_leaves(merge(profile, adjust)))
        for key, value in set_by_profile.items():
            assert got[key] == value, f"profile {name}: {key}"
        # Keys the profile does not set keep the dataclass defaults (sections merge, not replace).
        for key, value in defaults.items():
            if key not in set_by_profile and key != "profile":
                assert got[key] == value, f"profile {name}: {key}"
    smoke = make_config("smoke")
    assert smoke.data.root == "synthetic"
    assert (smoke.model.backbone, smoke.model.image_size, smoke.model.pretrained) == (
        "vit_t",
        64,
        False,
    )
    assert smoke.model.fallback_backbone is None and smoke.progress is False
    cpu = make_config("cpu")
    assert (
        cpu.model.pretrained is True and cpu.model.image_size == 512 and cpu.train.augment == "none"
    )
    paper = make_config("paper")
    assert (paper.model.image_size, paper.train.epochs, paper.train.augment) == (1024, 24, "lsj")
    assert paper.train.loss_points == 12544 and paper.data.train_cap is None
    assert make_config().profile == "cpu"
    with pytest.raises(ConfigError, match="valid profiles: smoke"):
        make_config("fast")


def test_unknown_top_level_key_lists_valid_keys() -> None:
    """A typo at the top level names itself and lists the valid keys."""
    with pytest.raises(ConfigError) as err:
        make_config("smoke", {"methd": "joint"})
    msg = str(err.value)
    assert "'methd'" in msg and "method" in msg and "results_dir" in msg and "train" in msg


def test_unknown_nested_key_lists_valid_keys_of_its_section() -> None:
    """``{"train": {"epoch": 3}}`` names train.epoch and lists the train section's keys."""
    with pytest.raises(ConfigError) as err:
        make_config("smoke", {"train": {"epoch": 3}})
    msg = str(err.value)
    assert "train.epoch" in msg and "epochs" in msg and "batch_size" in msg and "in train" in msg
    with pytest.raises(ConfigError, match="data.rooot"):
        make_config("smoke", dotted=["data.rooot=/x"])


def test_dotted_overrides_parse_json_values() -> None:
    """CLI overrides: ints, strings, null and lists are parsed; the result is a valid Config."""
    cfg = make_config(
        "smoke",
        dotted=[
            "train.epochs=3",
            "data.order=reverse",
            "data.train_cap=null",
            'train.prompt_types=["box"]',
            "train.lr=0.01",
            "progress=true",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.data.order == "reverse" and cfg.data.train_cap is None
    assert cfg.train.prompt_types == ["box"] and cfg.train.lr == 0.01 and cfg.progress is True
    # Dotted overrides win over dict overrides, which win over the profile.
    cfg = make_config("smoke", {"train": {"epochs": 5}}, dotted=["train.epochs=7"])
    assert cfg.train.epochs == 7
    assert dotted_to_dict(["a.b.c=1", "a.b.d=x", "e=[1,2]"]) == {
        "a": {"b": {"c": 1, "d": "x"}},
        "e": [1, 2],
    }
    with pytest.raises(ConfigError, match="section.key=value"):
        dotted_to_dict(["train.epochs"])


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"train": {"augment": "foo"}}, "train.augment"),
        ({"train": {"prompt_types": ["box", "scribble"]}}, "prompt_types"),
        ({"train": {"prompt_types": []}}, "prompt_types"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"batch_size": 2.5}}, "train.batch_size"),
        ({"train": {"cache_dtype": "int8"}}, "cache_dtype"),
        ({"data": {"test_cap": 0}}, "data.test_cap"),
        ({"data": "somewhere"}, "must be a mapping"),
    ],
)
def test_bad_values_raise(overrides: dict, needle: str) -> None:
    """Values of the right key but the wrong kind raise ConfigError naming the key."""
    with pytest.raises(ConfigError, match=needle):
        make_config("smoke", overrides)


def test_to_json_round_trips_through_config_from_file(tmp_path: Path) -> None:
    """A Config written as {"config": ...} (as beside every run) reads back equal; bare dicts too."""
    cfg = make_config(
        "smoke",
        {
            "method": "joint",
            "seed": 3,
            "data": {"order": ["CAMO", "Polyp"]},
            "method_options": {"hq_attention": "full"},
        },
        dotted=["train.epochs=4"],
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": json.loads(cfg.to_json()), "provenance": {}}))
    back = config_from_file(str(path))
    assert back == cfg and back.to_json() == cfg.to_json()
    assert back.data.order == ["CAMO", "Polyp"] and back.train.epochs == 4
    bare = tmp_path / "bare.json"
    bare.write_text(cfg.to_json())
    assert config_from_file(str(bare)) == cfg
    broken = json.loads(cfg.to_json())
    broken["train"]["epochs"] = -1
    path.write_text(json.dumps({"config": broken}))
    with pytest.raises(ConfigError, match="train.epochs"):
        config_from_file(str(path))


@pytest.mark.parametrize(
    "dotted, needle",
    [
        ("train.lr=abc", 'train.lr="abc"; expected a number'),
        ("train.lr=-1", "train.lr=-1"),
        ("train.lr=NaN", "train.lr=nan"),
        ("train.lr_gamma=0", "train.lr_gamma=0"),
        ("train.weight_decay=-0.5", "train.weight_decay=-0.5; expected a number >= 0"),
        ("train.epochs=true", "train.epochs=true; expected an integer"),
        ("train.tf32=1", "train.tf32=1; expected true or false"),
        ("data.include_probe=maybe", 'data.include_probe="maybe"; expected true or false'),
        ("data.order=[]", "data.order=[]"),
        ("data.layout=my_layout", "data.layout"),
        ("eval.batch_size=0", "eval.batch_size=0; expected a positive integer"),
        ("seed=-1", "seed=-1; expected an integer >= 0"),
        ("seed=1.5", "seed=1.5; expected an integer"),
        ("threads=0", "threads=0; expected a positive integer or null"),
        ("model.image_size=abc", 'model.image_size="abc"; expected an integer or null'),
        ("model.backbone=vit_x", "model.backbone"),
        ("model.checkpoint=3", "model.checkpoint=3; expected a string or null"),
        ("device=cuda:x", "device"),
        ("run_name=../b", "run_name"),
        ("train.prompt_types=[1]", "train.prompt_types=[1]; expected a list of strings"),
        ('method_options={"hq_attention": 3}', "method_options.hq_attention=3; expected a string"),
    ],
)
def test_every_value_is_checked(dotted: str, needle: str) -> None:
    """Type, range and choice of every kind of field fail in make_config, in one message style."""
    with pytest.raises(ConfigError) as err:
        make_config("smoke", dotted=[dotted])
    assert str(err.value).startswith("invalid config value ") and needle in str(err.value)


def test_ints_are_numbers_but_bools_are_not() -> None:
    """An int is accepted (as a float) where a float is expected; a bool is never a number."""
    cfg = make_config("smoke", dotted=["train.lr=1", "train.weight_decay=0"])
    assert (
        cfg.train.lr == 1.0
        and isinstance(cfg.train.lr, float)
        and isinstance(cfg.train.weight_decay, float)
    )
    with pytest.raises(ConfigError, match="train.lr=true"):
        make_config("smoke", {"train": {"lr": True}})
