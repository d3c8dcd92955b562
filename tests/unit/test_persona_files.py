"""Persona TOML files: the shipped set loads, and every mistake names the file, field and what is allowed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from spark_client.personas import PersonaFileError, load_persona, load_personas, shipped_personas
from spark_client.personas.files import SHIPPED_DIR


def test_shipped_duo_loads_main_first():
    spark, ember = shipped_personas()
    assert (spark.name, spark.role, ember.name, ember.role) == ("Spark", "main", "Ember", "cohost")
    assert spark.voice != ember.voice, "the duo must sound different"
    assert spark.lora_name and ember.lora_name and spark.lora_name != ember.lora_name
    assert spark.turns.share > ember.turns.share, "the main persona answers most chat"
    assert ember.turns.interject_probability > 0 and ember.turns.interject_cooldown_s > 0
    assert len(spark.examples) >= 3 and all(len(e) == 3 for e in spark.examples)
    assert dict(spark.hotkeys)["happy"] == "Smile"
    assert spark.is_addressed_in("hey @Sparky!") and not spark.is_addressed_in("sparkyness")


def copy_shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    shutil.copytree(SHIPPED_DIR, folder)
    return folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("interject_probability = 0.35", "interject_probabilty = 0.35", r"unknown field turns\.interject_probabilty"),
        (
            "interject_probability = 0.35",
            "interject_probability = 1.5",
            r"interject_probability must be from 0 to 1",
        ),
        ('name = "jf_alpha"', "name = 7", r"voice\.name must be a string"),
        ("banter_cap = 3", "banter_cap = 2.5", r"turns\.banter_cap must be a whole number"),
        ('thinking = "Thinking"', 'bored = "Yawn"', r"avatar\.hotkeys\.bored: the emotion must be one of"),
        ('role = "cohost"', 'role = "guest"', r"role must be one of 'main', 'cohost'"),
        ('name = "Ember"', 'name = "Ember Two"', r"name must be letters, digits"),
        ("max_sentences = 2", "colour = 'red'", r"unknown field colour; allowed here: .*\[turns\]"),
        ("answer = \"I'll pass.", "reply = \"I'll pass.", r"examples\[3\]"),
        ("temperature = 0.8", "temperature = nan", r"sampling\.temperature must be a number"),
        ('description = "', 'description = """', r"not valid TOML"),
    ],
)
def test_errors_name_the_file_the_field_and_what_is_allowed(tmp_path, old, new, message):
    folder = copy_shipped(tmp_path)
    edit(folder / "ember.toml", old, new)
    with pytest.raises(PersonaFileError, match=message) as info:
        load_personas(folder)
    assert "ember.toml" in str(info.value)


def test_folder_rules(tmp_path):
    folder = copy_shipped(tmp_path)
    edit(folder / "ember.toml", 'role = "cohost"', 'role = "main"')
    with pytest.raises(PersonaFileError, match="exactly one persona must have role"):
        load_personas(folder)
    folder = copy_shipped(tmp_path / "b")
    edit(folder / "ember.toml", 'triggers = ["embers"]', 'triggers = ["sparky"]')
    with pytest.raises(PersonaFileError, match="'sparky' already calls (Spark|Ember)"):
        load_personas(folder)
    with pytest.raises(PersonaFileError, match="no persona files"):
        load_personas(tmp_path / "b" / "personas" / "..")  # a folder with no .toml in it
    with pytest.raises(PersonaFileError, match="no such folder"):
        load_personas(tmp_path / "missing")


def test_minimal_file_gets_defaults(tmp_path):
    path = tmp_path / "solo.toml"
    path.write_text('name = "Solo"\ndescription = "A quiet one."\n')
    persona = load_persona(path)
    assert persona.role == "main" and persona.voice is None and persona.lora_name is None
    assert persona.turns.banter_cap == 3 and persona.sampling.max_tokens == 64
    assert load_personas(tmp_path) == (persona,)
