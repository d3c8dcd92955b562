"""Render a model's own chat template (Jinja2, sandboxed) into a prompt string."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spark_runtime.errors import EngineMissingError, RequestError

ROLES = {"system", "user", "assistant"}
MAX_MESSAGES = 512


class ChatTemplate:
    def __init__(self, template: str, special_tokens: dict[str, str]) -> None:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        self._template = env.from_string(template)
        self._error = TemplateError
        self.special_tokens = special_tokens

    @classmethod
    def from_engine_dir(cls, engine_dir: Path) -> ChatTemplate:
        manifest_path = engine_dir / "engine.json"
        if not manifest_path.is_file():
            raise EngineMissingError(f"no engine at {engine_dir}: run `make engines`")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        template = engine_dir / manifest.get("chat_template", "chat_template.jinja")
        tokens = engine_dir / manifest.get("special_tokens", "special_tokens.json")
        if not template.is_file():
            raise EngineMissingError(f"{template} is missing: rebuild the engine")
        specials = json.loads(tokens.read_text(encoding="utf-8")) if tokens.is_file() else {}
        return cls(template.read_text(encoding="utf-8"), specials)

    @property
    def stop_words(self) -> list[str]:
        eos = self.special_tokens.get("eos_token")
        return [eos] if eos else []

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        if not messages:
            raise RequestError("messages is empty")
        if len(messages) > MAX_MESSAGES:
            raise RequestError(f"{len(messages)} messages; the limit is {MAX_MESSAGES}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise RequestError(f"messages[{i}] must be an object with string 'role' and 'content'")
            if message.get("role") not in ROLES:
                raise RequestError(f"messages[{i}].role must be one of {sorted(ROLES)}")
        try:
            return str(
                self._template.render(
                    messages=messages, add_generation_prompt=add_generation_prompt, **self.special_tokens
                )
            )
        except self._error as exc:
            raise RequestError(f"chat template refused the messages: {exc}") from None


def parse_messages(raw: bytes) -> list[dict[str, Any]]:
    try:
        messages = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"messages must be a JSON list of {{role, content}} objects: {exc}") from None
    if not isinstance(messages, list):
        raise RequestError("messages must be a JSON list")
    return messages
