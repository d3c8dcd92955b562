"""Persona LoRA adapters trained on the CPU: `python -m build_engines adapters --personas personas/`.

For each persona file with an `[adapter] name`, the packaged SmolLM2 answers a checked-in list of
chat lines (`adapter_chat.txt`) in the persona's voice, with the prompt the client sends
(self-distillation); answers are cut to two sentences and end with the persona's catchphrase.
PEFT trains a LoRA on q/k/v/o with the loss on the answer only, and the result is written as

  llm/adapters/<name>.gguf           llama.cpp's form (the CPU `llm` engine loads it per request)
  llm/adapters/trtllm/<name>/        the PEFT files, checked, as the GB10 LLM (TensorRT-LLM) loads them
                                     (TensorRT-LLM's form; the folder `trtllm/` is a valid
                                     `build_engines gb10 --persona-adapters` input)
  llm/adapters/<name>.json           what it was trained from, how long it took, its loss

An adapter whose inputs (persona content, training settings, chat lines, base model) are
unchanged is not trained again. Optional `[adapter]` keys in a persona file: `steps`, `seed`, `rank`.

The persona files are read here with tomllib: the builder never imports the client.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from build_engines.adapter_data import (
    ANSWER_SENTENCES,
    CHECK_MAX_LOGIT_DIFF,
    DISTILL_MAX_TOKENS,
    DISTILL_REPEAT_PENALTY,
    HF_TO_GGUF,
    SENTENCE_END,
    TRTLLM_DIR,
    PersonaSpec,
    discover_personas,
    gguf_lora_weights,
    opening,
    read_chat_lines,
    says_line,
    style_answer,
    training_key,
)
from build_engines.cpu import _place, _sha256, _write_json
from build_engines.packaged import SMOLLM2


# --- training ----------------------------------------------------------------------------------
@dataclass
class TrainingResult:
    pairs: int
    distill_s: float
    train_s: float
    loss_first: float
    loss_final: float
    check: dict[str, float]


class AdapterTrainer:
    """Holds the base model twice: llama.cpp (distillation, tokens as served) and transformers
    (training), both loaded once for every persona of a build."""

    def __init__(self, llm_dir: Path, model_file: Path, log: Callable[[str], None] = print) -> None:
        import llama_cpp

        from spark_runtime.chat_template import ChatTemplate

        self.log = log
        self.template = ChatTemplate.from_engine_dir(llm_dir)
        self.eos = self.template.special_tokens.get("eos_token", "")
        self.model_file = model_file
        threads = os.cpu_count() or 1
        self.llama = llama_cpp.Llama(
            str(model_file), n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self._model: Any = None

    @property
    def model(self) -> Any:
        """transformers' de-quantised copy (fp32), loaded on first use: after the first distillation,
        so the two runtimes' thread pools never compete."""
        if self._model is None:
            from transformers import AutoModelForCausalLM
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            file = self.model_file
            self._model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name)
            self._model.requires_grad_(False)
        return self._model

    def tokens(self, text: str, *, first: bool) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=first, special=True))

    def conversation(self, persona: PersonaSpec, user: str, message: str) -> tuple[str, str]:
        """(fixed prefix, user turn + assistant header) as rendered by the model's own template."""
        fixed = opening(persona)
        prefix = self.template.render(fixed, add_generation_prompt=False)
        full = self.template.render([*fixed, {"role": "user", "content": says_line(user, message)}])
        if not full.startswith(prefix):
            raise ValueError("the chat template does not render a conversation as a prefix of a longer one")
        return prefix, full[len(prefix) :]

    def distill(self, persona: PersonaSpec, chat: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(user, message, styled answer) from the persona's examples and the base model's answers."""
        pairs = [(u, m, styled) for u, m, a in persona.examples if (styled := style_answer(a, persona, 3))]
        for user, message in chat:
            prefix, turn = self.conversation(persona, user, message)
            text = ""
            for chunk in self.llama.create_completion(
                self.tokens(prefix, first=True) + self.tokens(turn, first=False),
                max_tokens=DISTILL_MAX_TOKENS,
                temperature=0.0,
                repeat_penalty=DISTILL_REPEAT_PENALTY,
                stop=[self.eos] if self.eos else None,
                stream=True,
            ):
                text += chunk["choices"][0]["text"]
                if len(SENTENCE_END.findall(text + " ")) > ANSWER_SENTENCES:  # the rest is cut anyway
                    break
            answer = style_answer(text, persona)
            if answer:
                pairs.append((user, message, answer))
        return pairs

    def train(self, persona: PersonaSpec, folder: Path) -> TrainingResult:
        """Trains one adapter and saves it with PEFT into `folder` (named after the adapter)."""
        import torch
        from peft import LoraConfig, get_peft_model

        s = persona.settings
        started = time.monotonic()
        pairs = self.distill(persona, read_chat_lines())
        distill_s = time.monotonic() - started
        prefix, _ = self.conversation(persona, "x", "x")
        prefix_ids = torch.tensor([self.tokens(prefix, first=True)])
        samples = []
        for user, message, answer in pairs:
            turn = self.tokens(self.conversation(persona, user, message)[1], first=False)
            target = self.tokens(answer + self.eos, first=False)
            samples.append((turn + target, len(turn)))

        torch.manual_seed(s.seed)
        config = LoraConfig(
            r=s.rank,
            lora_alpha=s.alpha,
            lora_dropout=0.0,
            target_modules=list(HF_TO_GGUF),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(self.model, config)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: min(1.0, (step + 1) / 3) * max(0.1, 1 - step / s.steps)
        )
        order = torch.Generator().manual_seed(s.seed)
        queue: list[int] = []
        losses = []
        train_started = time.monotonic()
        for _ in range(s.steps):
            batch = []
            while len(batch) < min(s.batch, len(samples)):
                if not queue:
                    queue = torch.randperm(len(samples), generator=order).tolist()
                batch.append(samples[queue.pop()])
            loss = self._step(model, prefix_ids, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
            losses.append(loss.item())
        train_s = time.monotonic() - train_started
        model.eval()
        model.peft_config["default"].base_model_name_or_path = self.model_file.name
        model.save_pretrained(str(folder))
        check = self.check(model, persona, folder, pairs[-1])
        self._model = model.unload()  # the bare base model again, for the next persona
        tail = losses[-max(1, len(losses) // 4) :]
        return TrainingResult(len(pairs), distill_s, train_s, losses[0], sum(tail) / len(tail), check)

    def _step(self, model: Any, prefix_ids: Any, batch: list[tuple[list[int], int]]) -> Any:
        """Loss on the answers of `batch`, after the persona's fixed prefix.

        The prefix (system prompt + examples, ~250 tokens) is shared: it runs once per step without
        gradients and its KV cache is repeated for the batch. Gradients reach the adapter through
        the varying part only; that keeps a step a few seconds on 2 cores."""
        import torch

        with torch.no_grad():
            cache = model(input_ids=prefix_ids, use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(batch))
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), 0, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), prefix_ids.shape[1] + width), dtype=torch.long)
        mask[:, : prefix_ids.shape[1]] = 1
        for row, (tokens, answer_at) in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            labels[row, answer_at : len(tokens)] = torch.tensor(tokens[answer_at:])
            mask[row, prefix_ids.shape[1] : prefix_ids.shape[1] + len(tokens)] = 1
        positions = torch.arange(prefix_ids.shape[1], prefix_ids.shape[1] + width).expand(len(batch), -1)
        causal_lm = model.get_base_model()
        hidden = causal_lm.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache
        ).last_hidden_state
        predicts = labels[:, 1:] != -100  # the vocabulary projection runs only where the loss is
        logits = causal_lm.lm_head(hidden[:, :-1][predicts])
        return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][predicts])

    def export_gguf(self, folder: Path, out: Path, adapter: str) -> None:
        from safetensors.numpy import load_file

        from build_engines.lora_gguf import write_lora_gguf

        config = self.model.config
        state = load_file(str(folder / "adapter_model.safetensors"))
        alpha = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["lora_alpha"]
        weights = gguf_lora_weights(
            state, n_head=config.num_attention_heads, n_head_kv=config.num_key_value_heads or config.num_attention_heads
        )
        write_lora_gguf(out, architecture="llama", weights=weights, alpha=float(alpha), name=adapter)

    def check(self, model: Any, persona: PersonaSpec, folder: Path, pair: tuple[str, str, str]) -> dict[str, float]:
        """Writes the GGUF beside the PEFT files and compares transformers + PEFT with llama.cpp +
        GGUF adapter, teacher-forced on one answer: top-token agreement and the mean of the largest
        logit difference per position (~0.8 from quantised arithmetic alone, measured on Q4_1; ~5
        when Q/K rows are not permuted)."""
        import llama_cpp
        import torch

        gguf = folder / "adapter.gguf"
        self.export_gguf(folder, gguf, persona.adapter)
        prefix, turn = self.conversation(persona, pair[0], pair[1])
        prompt = self.tokens(prefix, first=True) + self.tokens(turn, first=False)
        tokens = prompt + self.tokens(pair[2], first=False)
        with torch.no_grad():
            hf = model(input_ids=torch.tensor([tokens])).logits[0, len(prompt) - 1 : -1].numpy()
        adapted = llama_cpp.Llama(str(self.model_file), n_ctx=1024, logits_all=True, lora_path=str(gguf), verbose=False)
        adapted.eval(tokens)
        cpp = np.asarray(adapted.scores[len(prompt) - 1 : len(tokens) - 1])
        del adapted
        same = float((hf.argmax(-1) == cpp.argmax(-1)).mean())
        diff = float(np.abs(hf - cpp).max(-1).mean())
        if diff > CHECK_MAX_LOGIT_DIFF:
            self.log(f"  warning: {persona.adapter}: llama.cpp and transformers disagree (logit diff {diff:.2f})")
        return {"top_token_agreement": round(same, 3), "mean_max_logit_diff": round(diff, 3), "positions": len(hf)}


# --- build -------------------------------------------------------------------------------------
def _record_ok(record: dict[str, Any], folder: Path, key: str) -> bool:
    files = [folder / f for f in record.get("files", [])]
    return record.get("key") == key and bool(files) and all(f.is_file() for f in files)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def build_adapters(
    llm_dir: Path,
    personas_dir: Path,
    *,
    reuse_from: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Trains (or keeps, or hard-links from `reuse_from`) each persona's adapter for the model in
    `llm_dir`; records them in its engine.json and returns the records by adapter name."""
    import tempfile

    engine_path = llm_dir / "engine.json"
    engine = json.loads(engine_path.read_text(encoding="utf-8"))
    model_file = llm_dir / engine["model"]
    base_sha256 = engine.get("sha256") or _sha256(model_file)
    adapters_dir = llm_dir / engine.get("adapters_dir", "adapters")
    if engine.get("source", {}).get("package") != SMOLLM2.package:
        _drop_stale(adapters_dir, base_sha256, log)
        log("  persona adapters: trained for the packaged SmolLM2 only; bring your model's as adapters/<name>.gguf")
        return {}
    chat = read_chat_lines()
    trainer: AdapterTrainer | None = None
    records: dict[str, dict[str, Any]] = {}
    for persona in discover_personas(personas_dir):
        key = training_key(persona, base_sha256, chat)
        sidecar = adapters_dir / f"{persona.adapter}.json"
        record = _read_record(sidecar)
        if not force and _record_ok(record, adapters_dir, key):
            log(f"  adapter {persona.adapter:8s} up to date ({persona.path.name})")
        elif not force and reuse_from and _record_ok(old := _read_record(reuse_from / sidecar.name), reuse_from, key):
            for name in old["files"]:
                _place(reuse_from / name, adapters_dir / name)
            _place(reuse_from / sidecar.name, sidecar)
            record = old
            log(f"  adapter {persona.adapter:8s} reused from {reuse_from}")
        else:
            if trainer is None:
                log(f"  loading {model_file.name} for adapter training")
                trainer = AdapterTrainer(llm_dir, model_file, log)
            record = _train_one(trainer, persona, adapters_dir, key, base_sha256, tempfile.mkdtemp())
            _write_json(sidecar, record)
            log(
                f"  adapter {persona.adapter:8s} trained in {record['train_s']:.0f} s "
                f"(+{record['distill_s']:.0f} s answers), loss {record['loss_first']:.2f} -> "
                f"{record['loss_final']:.2f}, llama.cpp agreement {record['check']['top_token_agreement']:.0%}"
            )
        records[persona.adapter] = {**record, "persona_sha256": persona.file_sha256, "persona": persona.path.name}
    engine["adapters"] = records
    _write_json(engine_path, engine)
    return records


def _drop_stale(adapters_dir: Path, base_sha256: str, log: Callable[[str], None]) -> None:
    """Removes adapters this builder trained for another base model (llama.cpp would refuse them)."""
    import shutil

    for sidecar in sorted(adapters_dir.glob("*.json")):
        record = _read_record(sidecar)
        if record.get("key") and record.get("base_sha256") != base_sha256:
            for name in record.get("files", []):
                (adapters_dir / name).unlink(missing_ok=True)
            if record.get("name"):
                shutil.rmtree(adapters_dir / TRTLLM_DIR / str(record["name"]), ignore_errors=True)
            sidecar.unlink()
            log(f"  removed adapter {record.get('name')}: trained for {record.get('base_model')}")


def _train_one(
    trainer: AdapterTrainer, persona: PersonaSpec, adapters_dir: Path, key: str, base_sha256: str, tmp: str
) -> dict[str, Any]:
    import shutil

    from build_engines.lora_trtllm import check_adapter

    folder = Path(tmp) / persona.adapter
    try:
        result = trainer.train(persona, folder)
        gguf = adapters_dir / f"{persona.adapter}.gguf"
        tmp_gguf = gguf.with_name(gguf.name + ".tmp")
        shutil.copyfile(folder / "adapter.gguf", tmp_gguf)
        tmp_gguf.replace(gguf)
        (folder / "adapter.gguf").unlink()
        trtllm = adapters_dir / TRTLLM_DIR / persona.adapter
        shutil.rmtree(trtllm, ignore_errors=True)  # new files, never writes into hard-linked copies
        check_adapter(folder, trainer.model.config.to_dict())
        trtllm.mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(folder / name, trtllm / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = [gguf.name] + sorted(str(p.relative_to(adapters_dir)) for p in trtllm.iterdir() if p.is_file())
    return {
        "name": persona.adapter,
        "persona": persona.path.name,
        "persona_sha256": persona.file_sha256,
        "catchphrase": persona.catchphrase,
        "key": key,
        "base_model": trainer.model_file.name,
        "base_sha256": base_sha256,
        **asdict(persona.settings),
        "target_modules": list(HF_TO_GGUF),
        "pairs": result.pairs,
        "distill_s": round(result.distill_s, 1),
        "train_s": round(result.train_s, 1),
        "loss_first": round(result.loss_first, 4),
        "loss_final": round(result.loss_final, 4),
        "check": result.check,
        "files": files,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def add_arguments(parser: Any) -> None:
    repo = Path(__file__).resolve().parent.parent
    parser.add_argument("--personas", type=Path, default=repo / "personas", help="folder of persona .toml files")
    parser.add_argument("--out", type=Path, default=repo / "engines" / "cpu", help="CPU engines folder")
    parser.add_argument("--force", action="store_true", help="train again even when an adapter is up to date")


def run(args: Any) -> int:
    from build_engines.cpu import build_llm

    llm_dir = args.out / "llm"
    if not (llm_dir / "engine.json").is_file():
        build_llm(args.out)
    records = build_adapters(llm_dir, args.personas, force=args.force)
    manifest_path = args.out / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if "llm" in manifest.get("engines", {}):
            manifest["engines"]["llm"]["adapters"] = records
            _write_json(manifest_path, manifest)
    print(f"adapters: {', '.join(records) or 'none'} in {llm_dir / 'adapters'}")
    return 0
