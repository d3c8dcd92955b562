"""NeMo's WFST text normaliser (nemo-text-processing), loaded from grammars compiled at build time.

Compiling the English grammars takes a minute or more on two cores, so `build_grammars` runs in
`python -m build_engines` and writes them (pynini `.far` archives, ~9 MB) into the `tts` engine
folder; the served model only loads them (`WfstNormaliser.load`, well under a second) and never
compiles on its own: without the archives it says so and speaks without this pass.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GRAMMAR_FOLDER = "normaliser"  # in the tts engine folder (engine.json: normaliser.grammars)
LANGUAGE = "en"
INPUT_CASE = "cased"  # chat and answers keep their case: "US" is not "us"
# What NeMo names the archives of the deterministic English grammars in its cache folder.
GRAMMAR_FILES = (
    f"{LANGUAGE}_tn_True_deterministic_{INPUT_CASE}__tokenize.far",
    f"{LANGUAGE}_tn_True_deterministic_verbalizer.far",
    f"{LANGUAGE}_tn_post_processing.far",
)


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def _quiet_nemo() -> None:
    # It logs each skipped post-processing step at INFO (a line per symbol per sentence) and sets
    # its logger back to INFO on every call, so a filter, not a level, keeps the server log quiet.
    nemo = logging.getLogger("NeMo-text-processing")
    if _warnings_only not in nemo.filters:
        nemo.addFilter(_warnings_only)


def _normalizer_class() -> Any:
    from nemo_text_processing.text_normalization.normalize import Normalizer

    _quiet_nemo()  # after the import: it sets its logger up as it loads
    return Normalizer


def wfst_available() -> bool:
    """Whether nemo-text-processing and pynini import here."""
    from importlib.util import find_spec

    return find_spec("pynini") is not None and find_spec("nemo_text_processing") is not None


def grammars_present(folder: Path) -> bool:
    return all((folder / name).is_file() for name in GRAMMAR_FILES)


def build_grammars(folder: Path) -> None:
    """Compiles the grammars into `folder` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not grammars_present(folder):
        _normalizer_class()(input_case=INPUT_CASE, lang=LANGUAGE, cache_dir=str(folder), overwrite_cache=False)
        missing = [name for name in GRAMMAR_FILES if not (folder / name).is_file()]
        if missing:
            raise RuntimeError(f"nemo-text-processing wrote no {', '.join(missing)} into {folder}")


def grammars_spec(version: str | None = None) -> dict[str, Any]:
    """The tts engine.json's `normaliser`: where the grammars are and what they read."""
    spec: dict[str, Any] = {
        "runtime": "nemo-text-processing",
        "grammars": GRAMMAR_FOLDER,
        "language": LANGUAGE,
        "input_case": INPUT_CASE,
    }
    if version is not None:
        spec["source"] = {"package": "nemo-text-processing", "version": version, "licence": "Apache-2.0"}
    return spec


class WfstNormaliser:
    """Written English -> spoken English: numbers, money, times, dates, ordinals, units,
    abbreviations ("$3.50" -> "three dollars fifty cents"). 5-100 ms a sentence on two cores."""

    def __init__(self, normalizer: Any) -> None:
        self._normalizer = normalizer
        self._lock = threading.Lock()  # one pynini cascade, shared by the model's worker threads

    @classmethod
    def load(cls, folder: Path) -> WfstNormaliser | None:
        """From archives built by `build_grammars`; None (and a warning) when they are not there."""
        if not grammars_present(folder):
            log.warning(
                "no text normalisation grammars in %s (run `make engines`): numbers are read as written", folder
            )
            return None
        normalizer = _normalizer_class()(input_case=INPUT_CASE, lang=LANGUAGE, cache_dir=str(folder))
        return cls(normalizer)

    def normalise(self, text: str) -> str:
        with self._lock:
            spoken = self._normalizer.normalize(text, verbose=False, punct_post_process=True)
        return str(spoken).strip() or text
