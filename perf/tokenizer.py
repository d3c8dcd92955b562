"""The served model's own tokenizer, as a local Hugging Face tokenizer folder made from its GGUF.

genai-perf counts tokens with an HF tokenizer given by path; transformers reads the tokenizer out
of a GGUF file (`gguf_file=`) offline, and `save_pretrained` writes the folder genai-perf loads.
The folder is cached per GGUF checksum under .cache/perf-tools/tokenizers/.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perf.tools import tools_dir


def _gguf_of(llm_engine_dir: Path) -> tuple[Path, str]:
    manifest = json.loads((llm_engine_dir / "engine.json").read_text(encoding="utf-8"))
    model = llm_engine_dir / manifest["model"]
    digest = manifest.get("sha256") or hashlib.sha256(model.read_bytes()).hexdigest()
    return model, str(digest)[:16]


def hf_tokenizer_dir(llm_engine_dir: Path) -> Path:
    """A folder with tokenizer.json for the GGUF in `llm_engine_dir` (made once, then reused)."""
    model, digest = _gguf_of(llm_engine_dir)
    out = tools_dir() / "tokenizers" / f"{model.stem}-{digest}"
    if (out / "tokenizer.json").is_file():
        return out
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name, local_files_only=True)
    tmp = out.with_name(out.name + ".tmp")
    tokenizer.save_pretrained(str(tmp))
    if out.exists():  # another run made it meanwhile
        shutil.rmtree(tmp)
    else:
        tmp.replace(out)
    return out


def token_counter(tokenizer_dir: Path) -> Callable[[Sequence[str]], int]:
    """Counts output tokens the way genai-perf does: the joined text, no special tokens added."""
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)

    def count(pieces: Sequence[str]) -> int:
        text = "".join(pieces)
        return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0

    return count
