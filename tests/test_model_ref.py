"""finetuning/model_ref.py: the one parser of model references, their parts, and "not found"."""

from __future__ import annotations

import pytest

from finetuning.model_ref import TASK_REF_KINDS, ModelNotFound, ModelRef, is_model_not_found, task_model_ref

RUN = "0123456789abcdef0123456789ABCDEF"


def test_every_kind_parses_and_formats_back():
    assert ModelRef.parse(RUN) == ModelRef("run", RUN.lower())
    assert str(ModelRef.parse(f" run:{RUN} ")) == f"run:{RUN.lower()}"
    assert ModelRef.parse("base:all-MiniLM-L6-v2") == ModelRef("base", "all-MiniLM-L6-v2")
    assert ModelRef.parse("models:/line@blue") == ModelRef("registered", "models:/line@blue")
    assert ModelRef.parse("dir:/tmp/m") == ModelRef("dir", "/tmp/m")
    for text in (f"run:{RUN.lower()}", "base:x", "models:/a/b/3", "dir:/tmp/m"):
        assert str(ModelRef.parse(text)) == text


def test_parts_of_registered_references():
    assert ModelRef.parse("models:/shop line@candidate").registered_parts == ("shop line", "candidate", None)
    assert ModelRef.parse("models:/a/b/3").registered_parts == ("a/b", None, "3")
    assert ModelRef.parse("models:/m-0123").registered_parts == ("m-0123", None, None)
    assert ModelRef.parse(RUN).token == RUN.lower()[:12]
    assert ModelRef.parse("dir:/tmp/model").token == "model"


def test_kinds_restrict_what_a_caller_accepts():
    with pytest.raises(ValueError, match="unrecognised model reference"):
        ModelRef.parse("dir:/tmp/m", TASK_REF_KINDS)
    for bad in ("", "whatever", "run:123", "base:", "models:/", "s3://bucket/m"):
        with pytest.raises(ValueError):
            ModelRef.parse(bad)


def test_task_policy_names_known_base_models_and_aliases_only():
    assert str(task_model_ref("base:all-MiniLM-L6-v2")) == "base:all-MiniLM-L6-v2"
    for bad in ("base:gpt-17", "models:/x", "models:/x/3", "dir:/tmp"):
        with pytest.raises(ValueError):
            task_model_ref(bad)


def test_a_missing_model_is_not_found_and_an_outage_is_not(tmp_path):
    with pytest.raises(ModelNotFound, match="cannot load model dir:"):
        ModelRef.parse(f"dir:{tmp_path / 'absent'}").load()
    assert is_model_not_found(FileNotFoundError("x")) and is_model_not_found(KeyError("x"))
    assert not is_model_not_found(ConnectionError("refused")) and not is_model_not_found(TimeoutError())
