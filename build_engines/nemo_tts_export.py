"""Runs inside the NeMo build environment (build_engines/nemo_tts.py makes it), never in the serving one.

    <build-env>/bin/python -m build_engines.nemo_tts_export export --fastpitch FP.nemo --vocoder HG.nemo --out DIR
    <build-env>/bin/python -m build_engines.nemo_tts_export tiny --out DIR

`export` turns a FastPitch + HiFi-GAN pair into what the `tts` engine loads without NeMo:
  fastpitch.onnx, vocoder.onnx   NeMo's own ONNX export of each model (text -> mel -> waveform)
  frontend.json                  the FastPitch tokenizer (symbols, G2P dictionary, rules), for
                                 spark_runtime/engines/nemo_frontend.py
  frontend_check.json            NeMo's own token ids for a fixed list of sentences: the build
                                 refuses the checkpoint when our frontend gives other ids
  export.json                    sample rate, speakers, ONNX input names, versions
`tiny` writes a randomly initialised, very small FastPitch (two speakers, IPA tokens) and HiFi-GAN
as .nemo files, built from configs like NeMo's published ones: what CI exports, having no checkpoint.

Only the standard library, NeMo and its dependencies are imported here: this environment has
numpy >= 2 (NeMo's pyarrow needs it), the serving one numpy < 2 (the Triton Python-backend stub).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# What the build checks our tokenizer against: punctuation, contractions, possessives, plurals,
# hyphenated and unknown words, shouting, digits left as graphemes, unicode quotes and dashes.
CHECK_SENTENCES = (
    "Hello world, chat!",
    "Thanks for the raid, everyone. You're all amazing!",
    "What's the plan for tonight's stream?",
    "I can't believe that worked... again.",
    "The streamer's cats are sleeping on the keyboard.",
    "WAIT, WHAT JUST HAPPENED?",
    "Let's build a well-known, totally-unplanned castle!",
    "Spark and Ember said: \u201cgood luck\u201d \u2014 and meant it.",
    "Round 2 starts in 10 minutes; grab a snack.",
    "Hmm; okay (maybe) -- fine!",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 co\u00f6perate.",
    "  extra   spaces   everywhere  ",
    "pixel_piper says hi",
    "",
)


def _quiet_nemo() -> None:
    import logging

    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    try:
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
    except ImportError:  # pragma: no cover - NeMo always has it
        pass


def _onnx_io(path: Path) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def _speaker_input(io: dict[str, Any]) -> str | None:
    """NeMo names the speaker input inconsistently ('speaker', or a traced 'input.N'): the int64 vector."""
    known = {"text", "pitch", "pace", "volume", "batch_lengths"}
    for spec in io["inputs"]:
        if spec["name"] not in known and spec["type"] == "int64" and len(spec["shape"]) == 1:
            return str(spec["name"])
    return None


def export(fastpitch_path: Path, vocoder_path: Path, out: Path) -> dict[str, Any]:
    import nemo
    import torch
    from nemo.collections.tts.models import FastPitchModel, HifiGanModel

    from build_engines.nemo_frontend_dump import describe_tokenizer, reference_encodings

    _quiet_nemo()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fastpitch = FastPitchModel.restore_from(str(fastpitch_path), map_location=torch.device("cpu")).eval()
    vocoder = HifiGanModel.restore_from(str(vocoder_path), map_location=torch.device("cpu")).eval()
    if not getattr(fastpitch, "learn_alignment", False) or fastpitch.vocab is None:
        raise ValueError(f"{fastpitch_path}: only FastPitch models with a text tokenizer (learn_alignment) are served")
    fp_rate, voc_rate = int(fastpitch.cfg.get("sample_rate", 22050)), int(vocoder.sample_rate)
    if fp_rate != voc_rate:
        raise ValueError(f"FastPitch makes {fp_rate} Hz mels, the vocoder expects {voc_rate} Hz: not a pair")
    mels = int(fastpitch.cfg.n_mel_channels)
    voc_mels = int(vocoder.cfg.preprocessor.nfilt)
    if mels != voc_mels:
        raise ValueError(f"FastPitch makes {mels} mel channels, the vocoder reads {voc_mels}: not a pair")

    frontend = describe_tokenizer(fastpitch.vocab)
    sentences = list(CHECK_SENTENCES)
    check = {"sentences": sentences, "ids": reference_encodings(fastpitch.vocab, sentences)}
    fastpitch.export(str(out / "fastpitch.onnx"))
    vocoder.export(str(out / "vocoder.onnx"))
    fp_io, voc_io = _onnx_io(out / "fastpitch.onnx"), _onnx_io(out / "vocoder.onnx")
    speaker_input = _speaker_input(fp_io)
    n_speakers = int(fastpitch.cfg.get("n_speakers", 1) or 1) if speaker_input else 1
    info = {
        "sample_rate": fp_rate,
        "mel_channels": mels,
        "hop_length": int(fastpitch.cfg.get("n_window_stride", 256)),
        "speakers": n_speakers,
        "fastpitch": {"file": "fastpitch.onnx", **fp_io, "speaker_input": speaker_input},
        "vocoder": {"file": "vocoder.onnx", **voc_io},
        "nemo_version": nemo.__version__,
        "torch_version": torch.__version__,
        "sources": {"fastpitch": str(fastpitch_path), "vocoder": str(vocoder_path)},
        "export_seconds": round(time.monotonic() - started, 1),
    }
    for name, data in (("frontend.json", frontend), ("frontend_check.json", check), ("export.json", info)):
        (out / name).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return info


# A small CMU-style IPA dictionary for the tiny model's G2P (word, then its phonemes).
TINY_DICTIONARY = """\
HELLO  həˈɫoʊ
WORLD  ˈwɝɫd
CHAT  ˈtʃæt
THANKS  ˈθæŋks
FOR  ˈfɔɹ
THE  ðə
THE  ˈðiː
RAID  ˈɹeɪd
STREAM  ˈstɹim
CAT  ˈkæt
GOOD  ˈɡʊd
LUCK  ˈɫək
"""


def _mel_preprocessor(sample_rate: int, mels: int) -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.parts.preprocessing.features.FilterbankFeatures",
        "sample_rate": sample_rate,
        "n_window_size": 1024,
        "n_window_stride": 256,
        "window": "hann",
        "normalize": None,
        "n_fft": 1024,
        "preemph": None,
        "nfilt": mels,
        "lowfreq": 0,
        "highfreq": 8000,
        "log": True,
        "log_zero_guard_type": "clamp",
        "log_zero_guard_value": 1e-05,
        "dither": 0.0,
        "pad_to": 1,
        "frame_splicing": 1,
        "exact_pad": True,
        "pad_value": -11.52,
        "mag_power": 1.0,
    }


def tiny(out: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """A random two-speaker FastPitch (IPA tokens, mixed with graphemes) and HiFi-GAN, as .nemo files."""
    import torch
    from nemo.collections.tts.models import FastPitchModel, HifiGanModel
    from omegaconf import OmegaConf

    _quiet_nemo()
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    dictionary = out / "tiny_ipa_dict.txt"
    dictionary.write_text(TINY_DICTIONARY, encoding="utf-8")
    heteronyms = out / "tiny_heteronyms.txt"
    heteronyms.write_text("record\nlive\n", encoding="utf-8")
    width, mels, rate = 32, 80, 22050
    fft = {"n_layer": 1, "n_head": 1, "d_model": width, "d_head": 16, "d_inner": 64, "kernel_size": 3}
    fft |= {"dropout": 0.1, "dropatt": 0.1, "dropemb": 0.0}
    predictor = {"input_size": width, "kernel_size": 3, "filter_size": 32, "dropout": 0.1, "n_layers": 1}
    modules = "nemo.collections.tts.modules"
    fastpitch_cfg = {
        "learn_alignment": True,
        "n_speakers": 2,
        "speaker_emb_condition_prosody": True,
        "symbols_embedding_dim": width,
        "max_token_duration": 75,
        "min_token_duration": 1,  # every token lasts a frame: a random duration predictor says ~0
        "n_mel_channels": mels,
        "pitch_embedding_kernel_size": 3,
        "sample_rate": rate,
        "n_window_stride": 256,
        "pitch_mean": 212.0,
        "pitch_std": 68.0,
        # As NeMo's published en-US IPA FastPitch: IPA tokens, graphemes for unknown words ("#"-prefixed, upper case).
        "text_tokenizer": {
            "_target_": "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers.IPATokenizer",
            "locale": "en-US",
            "punct": True,
            "apostrophe": True,
            "pad_with_space": True,
            "g2p": {
                "_target_": "nemo.collections.tts.g2p.models.i18n_ipa.IpaG2p",
                "phoneme_dict": str(dictionary),
                "heteronyms": str(heteronyms),
                "locale": "en-US",
                "use_chars": True,
                "phoneme_probability": 0.8,
                "ignore_ambiguous_words": False,
                "grapheme_case": "upper",
                "grapheme_prefix": "#",
            },
        },
        "train_ds": {"defer_setup": True, "dataset": {"_target_": "nemo.collections.tts.data.dataset.TTSDataset"}},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": rate,
            "features": mels,
            "n_fft": 1024,
            "n_window_size": 1024,
            "window_size": False,
            "n_window_stride": 256,
            "window_stride": False,
            "window": "hann",
            "lowfreq": 0,
            "highfreq": 8000,
            "normalize": None,
            "preemph": None,
            "dither": 0.0,
            "pad_to": 1,
            "pad_value": 0,
            "frame_splicing": 1,
            "log": True,
            "log_zero_guard_type": "add",
            "log_zero_guard_value": 1e-05,
            "mag_power": 1.0,
        },
        "input_fft": {"_target_": f"{modules}.transformer.FFTransformerEncoder", **fft, "d_embed": width},
        "output_fft": {"_target_": f"{modules}.transformer.FFTransformerDecoder", **fft},
        "alignment_module": {"_target_": f"{modules}.aligner.AlignmentEncoder", "n_text_channels": width},
        "duration_predictor": {"_target_": f"{modules}.fastpitch.TemporalPredictor", **predictor},
        "pitch_predictor": {"_target_": f"{modules}.fastpitch.TemporalPredictor", **predictor},
        "optim": {"name": "adam", "lr": 1e-3},
    }
    vocoder_cfg = {
        "preprocessor": _mel_preprocessor(rate, mels),
        "generator": {
            "_target_": f"{modules}.hifigan_modules.Generator",
            "resblock": 1,
            "upsample_rates": [8, 8, 2, 2],
            "upsample_kernel_sizes": [16, 16, 4, 4],
            "upsample_initial_channel": 32,
            "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3, 5]],
        },
        "train_ds": {"defer_setup": True, "dataset": {"_target_": "nemo.collections.tts.data.dataset.VocoderDataset"}},
        "optim": {"_target_": "torch.optim.AdamW", "lr": 2e-4},
        "max_steps": 1,
    }
    fastpitch = FastPitchModel(cfg=OmegaConf.create(fastpitch_cfg)).eval()
    vocoder = HifiGanModel(cfg=OmegaConf.create(vocoder_cfg)).eval()
    paths = out / "tiny_fastpitch.nemo", out / "tiny_hifigan.nemo"
    fastpitch.save_to(str(paths[0]))
    vocoder.save_to(str(paths[1]))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m build_engines.nemo_tts_export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="FastPitch + HiFi-GAN .nemo files -> ONNX + frontend")
    ex.add_argument("--fastpitch", type=Path, required=True)
    ex.add_argument("--vocoder", type=Path, required=True)
    ex.add_argument("--out", type=Path, required=True)
    ti = sub.add_parser("tiny", help="a tiny random FastPitch + HiFi-GAN pair as .nemo files (tests)")
    ti.add_argument("--out", type=Path, required=True)
    ti.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            info = export(args.fastpitch, args.vocoder, args.out)
            print(json.dumps({k: info[k] for k in ("sample_rate", "speakers", "nemo_version", "export_seconds")}))
        else:
            for path in tiny(args.out, seed=args.seed):
                print(path)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
